"""The gallery, torch-free: who is registered (SQLite, the truth), their sample crops, and the 1:N search index
(a cache of the templates).

`store.Gallery` is the entry point; it delegates to one module per job, each importing only those below it:
`records` (errors, result types, file names), `names` (which names are allowed), `vectors` (embeddings as
stored), `files` (the data directory and sample crops), `seed` (the seed project's pickle), `search_index`
(top-k search), `index_cache` (that index kept in step with the database), `database` (the SQLite file)."""
