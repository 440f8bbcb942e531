"""The build's user error, shared by the build, its outputs (folder, S3) and its engines (process
pool, Ray): each raises it and none of them imports another for it."""


class BuildError(ValueError):
    """A problem with the build's arguments or output folder; the message says what to do."""
