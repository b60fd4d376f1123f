// How bindings use node/protocol.d.ts; `tsc --noEmit --strict` must accept it.
// Each `@ts-expect-error` marks a mistake the types must catch: it fails the check when the
// line compiles, so the types cannot get looser unnoticed. Checked by scripts/test-bindings.sh.

import type {
  AgentvmCommand,
  AgentvmEvent,
  AgentvmResponse,
  AgentvmEventMap,
  CommandMap,
  CommandName,
  ContentPart,
  ImageGetRequest,
  TemplateCreateRequest,
} from "../../../../node/protocol";

declare function request<K extends CommandName>(
  name: K,
  data: CommandMap[K]["request"],
): Promise<CommandMap[K]["response"]>;

export async function flow(): Promise<string | undefined> {
  const got = await request("image_get", { imageId: "img_1" });
  const built = await request("image_build", { containerId: "c", definitionName: "coder" });
  await request("sandbox_create", { templateId: "busybox", memoryMb: 64 });
  // @ts-expect-error: imageId is required
  await request("image_get", {});
  // @ts-expect-error: unknown command
  await request("image_fetch", {});
  // @ts-expect-error: the wrong request for the command
  await request("image_get", { containerId: "c" });
  return got.record?.imageId ?? built.record.imageId;
}

export function textOf(event: AgentvmEvent): string {
  switch (event.type) {
    case "text_delta":
      return event.data.text;
    case "sandbox_exec_output":
      return event.data.data;
    default:
      return "";
  }
}

export function onOutput(event: AgentvmEventMap["sandbox_exec_output"]): string {
  return event.data.executionId;
}

export const template: TemplateCreateRequest = {
  templateId: "busybox",
  name: "Busybox",
  image: "busybox:latest",
  network: { mode: "bridge", name: "sandboxes" },
  security: { readOnlyRoot: true },
};

export const parts: ContentPart[] = [
  { type: "text", text: "look" },
  { type: "image", data: "AAA=", mediaType: "image/png" },
  // @ts-expect-error: not a kind of part
  { type: "video", data: "" },
];

// @ts-expect-error: imageId is a string
export const wrong: ImageGetRequest = { imageId: 5 };

export const command: AgentvmCommand = { type: "image_get_request", data: { imageId: "img_1" } };
// @ts-expect-error: the data of another command
export const mixed: AgentvmCommand = { type: "image_get_request", data: { containerId: "c" } };

export function recordOf(response: AgentvmResponse): string | undefined {
  if (response.type === "image_get_response") {
    return response.data.record?.imageId;
  }
  return undefined;
}
