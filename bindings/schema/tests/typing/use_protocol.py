"""How bindings use python/agentvm/_protocol.py; `mypy --strict` must accept it.

Each `# type: ignore[...]` marks a mistake the types must catch: under --strict an ignore that
is not needed is an error, so these lines fail the check when the types get looser.
Checked by scripts/test-bindings.sh with MYPYPATH=python/agentvm, then run (PYTHONPATH) for
what the module holds at run time.
"""

from typing import get_args

from _protocol import (
    COMMANDS,
    AgentvmEvent,
    CommandName,
    ContentPart,
    ImageBuildResponse,
    ImageGetRequest,
    ImageGetResponse,
    SandboxCreateRequest,
    TemplateCreateRequest,
)

request: ImageGetRequest = {"imageId": "img_1"}
response: ImageGetResponse = {"record": None}
found: ImageGetResponse = {"record": None, "__subscriptions": ["sess_1"]}
sandbox: SandboxCreateRequest = {"templateId": "busybox", "memoryMb": 64}
template: TemplateCreateRequest = {
    "templateId": "busybox",
    "name": "Busybox",
    "image": "busybox:latest",
    "network": {"mode": "bridge", "name": "sandboxes"},
    "security": {"readOnlyRoot": True},
}
parts: list[ContentPart] = [
    {"type": "text", "text": "look"},
    {"type": "image", "data": "AAA=", "mediaType": "image/png"},
]
name: CommandName = "image_get"
spec = COMMANDS[name]
wire: str = spec.request_type


def text_of(event: AgentvmEvent) -> str:
    """Narrowing on `type` reaches the event's own data."""
    if event["type"] == "text_delta":
        return event["data"]["text"]
    if event["type"] == "sandbox_exec_output":
        return event["data"]["data"]
    return ""


def image_id(built: ImageBuildResponse) -> str:
    return built["record"]["imageId"]


missing: ImageGetRequest = {}  # type: ignore[typeddict-item]
wrong: ImageGetRequest = {"imageId": 5}  # type: ignore[typeddict-item]
unknown: ImageGetRequest = {"imageId": "i", "imageID": "i"}  # type: ignore[typeddict-unknown-key]
bad_part: ContentPart = {"type": "video", "data": ""}  # type: ignore[assignment]
bad_name: CommandName = "image_fetch"  # type: ignore[assignment]

# At run time: the TypedDicts know their optional keys, COMMANDS has every command.
assert ImageGetRequest.__required_keys__ == frozenset({"imageId"})
assert ImageGetResponse.__optional_keys__ == frozenset({"__subscriptions"})
assert set(COMMANDS) == set(get_args(CommandName)) and len(COMMANDS) > 50
assert COMMANDS["image_build"].response is ImageBuildResponse
assert COMMANDS["sandbox_create"] == (
    "sandbox_create_request",
    "sandbox_create_response",
    SandboxCreateRequest,
    COMMANDS["sandbox_terminate"].response,
)
print(f"ok: {len(COMMANDS)} commands")
