"""The Triton model repository: `config.pbtxt` through Triton's protobuf (`configs`, its one writer), the whole
repository for one spec (`writer`), run-time overrides in a private view (`overlay`), and the Python-backend
models Triton runs (`backends`)."""
