// How the package's types are used, mistakes included (they must stay errors). Type-checked by
// scripts/test-bindings.sh with tsc --strict; never run.
import { open, connect, type AgentVm } from '../../index'

declare global {
  // The package types name Node's Buffer and AbortSignal; this check runs without @types/node.
  class Buffer extends Uint8Array {}
  interface AbortSignal {
    readonly aborted: boolean
  }
}

export async function use(vm: AgentVm): Promise<unknown[]> {
  // Any command, typed by protocol.d.ts's CommandMap, with or without `_request`.
  const got = await vm.request({ type: 'image_get', data: { imageId: 'img_x' } })
  const imageId: string | undefined = got.record?.imageId
  const list = await vm.request({ type: 'container_list_request' }, { timeoutMs: 1000 })
  const ids: string[] = list.containerIds
  // @ts-expect-error an unknown command
  await vm.request({ type: 'no_such_command' })
  // @ts-expect-error a field image_get does not have
  await vm.request({ type: 'image_get', data: { imageID: 'img_x' } })
  // Options are embed's names.
  const local = await open({ llm: 'mock', dataDir: '/tmp/x', scheduler: { background: false }, maxTokens: 5 })
  // @ts-expect-error the old name
  await open({ mockDeltaDelayMs: 5 })
  const remote = await connect('ws://127.0.0.1:1/ws', { token: 't', timeoutMs: 10 })
  const stream = local.events({ sessions: [{ sessionId: 's', afterCursor: 3 }], global: true })
  const batch = await stream.nextBatch({ max: 10, timeoutMs: 5 })
  // @ts-expect-error sessionId is not a subscribe option (sessions is)
  local.events({ sessionId: 's' })
  const server = await local.serve({ addr: '127.0.0.1:0', auth: 'disabled' })
  return [imageId, ids, remote.kind, batch, server.url]
}
