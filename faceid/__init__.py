"""faceid: fine-tune a face-recognition network and run a face-ID terminal app.

One module per concept; the top-level scripts only parse arguments and call in here.
"""

__version__ = "0.1.0"
