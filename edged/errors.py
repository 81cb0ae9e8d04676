"""The one exception hierarchy of edged.

Every error edged raises on purpose derives from :class:`EdgedError`; foreign
exceptions (OSError, onnxruntime's, cv2's, json's, ...) are wrapped where they
cross into edged with ``raise SomethingError(...) from e``. The CLI turns any
``EdgedError`` into one line on stderr and exit code 2; nothing else is
caught there, so a traceback always means a bug in edged.

    EdgedError
     ├── ConfigError            a config file or value is invalid (names the key path)
     ├── InputError             a CLI input (image, video, directory) cannot be read
     ├── ModelError             a model artifact cannot be used (names the file)
     │    ├── ModelFormatError  not ONNX / truncated / not an .etlt / unsupported payload
     │    ├── ModelKeyError     an .etlt did not decrypt: wrong model key or corrupt file
     │    └── ModelContractError  the model's inputs/outputs do not fit the task
     ├── BackendError           the inference runtime failed at run time
     ├── SourceError            a camera or stream source cannot be opened or read
     ├── PublishError           results cannot be delivered (MQTT, outbox)
     ├── CommandError           an MQTT command is malformed or fails (edged/mqtt/commands.py)
     ├── EngineError            a TensorRT engine cannot be built, loaded or cached
     │    └── EngineDeserializeError  TensorRT returned None for a cached engine
     └── UpdateError            a model update is refused or failed (edged/update)
          └── StagingError      the update's files cannot be written (disk full, I/O error)

Messages are written for the person running edged: one line, what is wrong,
where (file, key path, URL) and what was expected. They never contain secrets
(model keys, passwords).
"""


class EdgedError(Exception):
    """Base of every error edged raises on purpose."""


class ConfigError(EdgedError):
    """A configuration file or value is invalid."""


class InputError(EdgedError):
    """An input given on the command line cannot be read."""


class ModelError(EdgedError):
    """A model artifact cannot be used."""


class ModelFormatError(ModelError):
    """The model file is not in a format edged can read, or is damaged."""


class ModelKeyError(ModelError):
    """An encrypted model did not decrypt to a parseable payload."""


class ModelContractError(ModelError):
    """The model's inputs or outputs do not fit the configured task."""


class BackendError(EdgedError):
    """The inference runtime failed while running a model."""


class SourceError(EdgedError):
    """A frame source (camera, stream, file) cannot be opened or read."""


class PublishError(EdgedError):
    """Results cannot be delivered."""


class EngineError(EdgedError):
    """A TensorRT engine cannot be built, loaded or cached."""


class EngineDeserializeError(EngineError):
    """TensorRT could not deserialize an engine (``deserialize_cuda_engine`` returned None).

    Defined here, not in :mod:`edged.engine.errors`: the TensorRT backend raises it and
    edged.backends sits below edged.engine.
    """


class UpdateError(EdgedError):
    """A model update is refused or failed: bad signature, stale or replayed manifest, caps,
    a transfer or a canary that went wrong."""


class StagingError(UpdateError):
    """An update's files cannot be written (disk full, I/O error): the update cannot go on."""
