"""avshards: audio-visual WebDataset shards (16 fps JPEG frames + 16 kHz audio) - build, stream, read."""

from avshards.format import SCHEMA_VERSION, AVClip, SchemaError
from avshards.reader import open_shards

__all__ = ["AVClip", "SchemaError", "SCHEMA_VERSION", "open_shards"]
__version__ = "0.1.0"
