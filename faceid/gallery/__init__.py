"""The gallery, torch-free: who is registered (SQLite, the truth), their sample crops, and the 1:N search index
(a cache of the templates)."""
