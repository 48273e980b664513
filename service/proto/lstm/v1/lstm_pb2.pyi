from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_STOP: FinishReason

class Input(_message.Message):
    __slots__ = ("tokens", "text")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    text: str
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("top_k", "all_positions", "logprobs")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALL_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    all_positions: bool
    logprobs: bool
    def __init__(self, top_k: _Optional[int] = ..., all_positions: _Optional[bool] = ..., logprobs: _Optional[bool] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("token", "prob", "logprob", "piece", "text")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROB_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    token: int
    prob: float
    logprob: float
    piece: bytes
    text: str
    def __init__(self, token: _Optional[int] = ..., prob: _Optional[float] = ..., logprob: _Optional[float] = ..., piece: _Optional[bytes] = ..., text: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("position", "top", "logprobs")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    position: int
    top: _containers.RepeatedCompositeFieldContainer[Candidate]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, position: _Optional[int] = ..., top: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., logprobs: _Optional[_Iterable[float]] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("session_id", "steps", "consumed", "predictions", "tag")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    steps: int
    consumed: int
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    tag: str
    def __init__(self, session_id: _Optional[str] = ..., steps: _Optional[int] = ..., consumed: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., tag: _Optional[str] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("open", "step")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    open: OpenStream
    step: StreamStep
    def __init__(self, open: _Optional[_Union[OpenStream, _Mapping]] = ..., step: _Optional[_Union[StreamStep, _Mapping]] = ...) -> None: ...

class OpenStream(_message.Message):
    __slots__ = ("session_id", "create", "ttl_seconds", "end_with_stream", "output", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_WITH_STREAM_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    create: bool
    ttl_seconds: int
    end_with_stream: bool
    output: OutputOptions
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., create: _Optional[bool] = ..., ttl_seconds: _Optional[int] = ..., end_with_stream: _Optional[bool] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StreamStep(_message.Message):
    __slots__ = ("input", "output", "tag", "start", "end", "expected_steps")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_STEPS_FIELD_NUMBER: _ClassVar[int]
    input: Input
    output: OutputOptions
    tag: str
    start: bool
    end: bool
    expected_steps: int
    def __init__(self, input: _Optional[_Union[Input, _Mapping]] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., tag: _Optional[str] = ..., start: _Optional[bool] = ..., end: _Optional[bool] = ..., expected_steps: _Optional[int] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("opened", "result")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    opened: Session
    result: StepResult
    def __init__(self, opened: _Optional[_Union[Session, _Mapping]] = ..., result: _Optional[_Union[StepResult, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("session_id", "input", "output", "start", "expected_steps", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_STEPS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    input: Input
    output: OutputOptions
    start: bool
    expected_steps: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., input: _Optional[_Union[Input, _Mapping]] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., start: _Optional[bool] = ..., expected_steps: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: StepResult
    def __init__(self, result: _Optional[_Union[StepResult, _Mapping]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("session_id", "prompt", "sampling", "expected_steps", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_STEPS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    prompt: Input
    sampling: SamplingParams
    expected_steps: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., prompt: _Optional[_Union[Input, _Mapping]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., expected_steps: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("token", "piece", "text", "logprob", "steps", "finish_reason", "session_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    token: int
    piece: bytes
    text: str
    logprob: float
    steps: int
    finish_reason: FinishReason
    session_id: str
    def __init__(self, token: _Optional[int] = ..., piece: _Optional[bytes] = ..., text: _Optional[str] = ..., logprob: _Optional[float] = ..., steps: _Optional[int] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., session_id: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "model", "steps", "age_seconds", "idle_seconds", "ttl_seconds", "expires_in_seconds", "busy")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    steps: int
    age_seconds: float
    idle_seconds: float
    ttl_seconds: int
    expires_in_seconds: float
    busy: bool
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., steps: _Optional[int] = ..., age_seconds: _Optional[float] = ..., idle_seconds: _Optional[float] = ..., ttl_seconds: _Optional[int] = ..., expires_in_seconds: _Optional[float] = ..., busy: _Optional[bool] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("session_id", "ttl_seconds", "prompt", "output", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    ttl_seconds: int
    prompt: Input
    output: OutputOptions
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., prompt: _Optional[_Union[Input, _Mapping]] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session", "result")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    session: Session
    result: StepResult
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ..., result: _Optional[_Union[StepResult, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ResetSessionRequest(_message.Message):
    __slots__ = ("session_id", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ResetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class RewindSessionRequest(_message.Message):
    __slots__ = ("session_id", "steps")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    steps: int
    def __init__(self, session_id: _Optional[str] = ..., steps: _Optional[int] = ...) -> None: ...

class RewindSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: int
    def __init__(self, steps: _Optional[int] = ...) -> None: ...

class ForkSessionRequest(_message.Message):
    __slots__ = ("session_id", "new_session_id", "ttl_seconds", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    new_session_id: str
    ttl_seconds: int
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., new_session_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ForkSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ExportSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ExportSessionResponse(_message.Message):
    __slots__ = ("blob", "steps")
    BLOB_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    blob: bytes
    steps: int
    def __init__(self, blob: _Optional[bytes] = ..., steps: _Optional[int] = ...) -> None: ...

class ImportSessionRequest(_message.Message):
    __slots__ = ("blob", "session_id", "ttl_seconds", "request_id")
    BLOB_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    blob: bytes
    session_id: str
    ttl_seconds: int
    request_id: str
    def __init__(self, blob: _Optional[bytes] = ..., session_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "total", "max_sessions")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    total: int
    max_sessions: int
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., total: _Optional[int] = ..., max_sessions: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "cell", "has_cell_state", "vocab_kind", "vocab_size", "embed_size", "hidden_size", "layers", "precision", "precisions", "providers", "validation_loss", "sha256", "max_tokens_per_message", "max_generate_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    HAS_CELL_STATE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_KIND_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBED_SIZE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    cell: str
    has_cell_state: bool
    vocab_kind: str
    vocab_size: int
    embed_size: int
    hidden_size: int
    layers: int
    precision: str
    precisions: _containers.RepeatedScalarFieldContainer[str]
    providers: _containers.RepeatedScalarFieldContainer[str]
    validation_loss: float
    sha256: str
    max_tokens_per_message: int
    max_generate_tokens: int
    def __init__(self, name: _Optional[str] = ..., cell: _Optional[str] = ..., has_cell_state: _Optional[bool] = ..., vocab_kind: _Optional[str] = ..., vocab_size: _Optional[int] = ..., embed_size: _Optional[int] = ..., hidden_size: _Optional[int] = ..., layers: _Optional[int] = ..., precision: _Optional[str] = ..., precisions: _Optional[_Iterable[str]] = ..., providers: _Optional[_Iterable[str]] = ..., validation_loss: _Optional[float] = ..., sha256: _Optional[str] = ..., max_tokens_per_message: _Optional[int] = ..., max_generate_tokens: _Optional[int] = ...) -> None: ...

class UnitRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("session_id", "input", "layers", "channels", "unit_range", "top_units", "top_k", "commit")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    UNIT_RANGE_FIELD_NUMBER: _ClassVar[int]
    TOP_UNITS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    input: Input
    layers: _containers.RepeatedScalarFieldContainer[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    unit_range: UnitRange
    top_units: int
    top_k: int
    commit: bool
    def __init__(self, session_id: _Optional[str] = ..., input: _Optional[_Union[Input, _Mapping]] = ..., layers: _Optional[_Iterable[int]] = ..., channels: _Optional[_Iterable[str]] = ..., unit_range: _Optional[_Union[UnitRange, _Mapping]] = ..., top_units: _Optional[int] = ..., top_k: _Optional[int] = ..., commit: _Optional[bool] = ...) -> None: ...

class ExplainToken(_message.Message):
    __slots__ = ("token", "piece", "text", "top")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    token: int
    piece: bytes
    text: str
    top: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, token: _Optional[int] = ..., piece: _Optional[bytes] = ..., text: _Optional[str] = ..., top: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class ExplainChannel(_message.Message):
    __slots__ = ("name", "units", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    units: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., units: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class ExplainLayer(_message.Message):
    __slots__ = ("layer", "mean_forget", "mean_input", "state_change", "channels")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    MEAN_FORGET_FIELD_NUMBER: _ClassVar[int]
    MEAN_INPUT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    layer: int
    mean_forget: _containers.RepeatedScalarFieldContainer[float]
    mean_input: _containers.RepeatedScalarFieldContainer[float]
    state_change: _containers.RepeatedScalarFieldContainer[float]
    channels: _containers.RepeatedCompositeFieldContainer[ExplainChannel]
    def __init__(self, layer: _Optional[int] = ..., mean_forget: _Optional[_Iterable[float]] = ..., mean_input: _Optional[_Iterable[float]] = ..., state_change: _Optional[_Iterable[float]] = ..., channels: _Optional[_Iterable[_Union[ExplainChannel, _Mapping]]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("session_id", "steps", "committed", "tokens", "layers", "available_channels")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    steps: int
    committed: bool
    tokens: _containers.RepeatedCompositeFieldContainer[ExplainToken]
    layers: _containers.RepeatedCompositeFieldContainer[ExplainLayer]
    available_channels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., steps: _Optional[int] = ..., committed: _Optional[bool] = ..., tokens: _Optional[_Iterable[_Union[ExplainToken, _Mapping]]] = ..., layers: _Optional[_Iterable[_Union[ExplainLayer, _Mapping]]] = ..., available_channels: _Optional[_Iterable[str]] = ...) -> None: ...
