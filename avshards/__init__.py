"""avshards: audio-visual WebDataset shards (16 fps JPEG frames + 16 kHz audio) - build, stream, read."""

from avshards.build import BuildReport, build  # noqa: E402  (the function shadows the submodule name)
from avshards.format import SCHEMA_VERSION, AVClip, SchemaError
from avshards.reader import open_shards
from avshards.sources import SourceItem

__all__ = ["AVClip", "BuildReport", "SchemaError", "SCHEMA_VERSION", "SourceItem", "build", "open_shards"]
__version__ = "0.1.0"
