// A streamable HTTP MCP server (the Node MCP SDK) for tests/tests/mcp_servers.rs.
// Listens on 127.0.0.1 on a free port and prints `listening <port>` once ready.
// Tool `shout`: upper-cases `text`; it also reports the X-Fixture-Key header it was sent.
import { createServer } from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

function build(key) {
  const server = new McpServer({ name: "node-fixture", version: "1.0.0" });
  server.tool("shout", "Upper-cases a text", { text: z.string() }, async ({ text }) => ({
    content: [{ type: "text", text: `${text.toUpperCase()} (key ${key ?? "none"})` }],
  }));
  return server;
}

const http = createServer(async (req, res) => {
  if (req.url !== "/mcp") {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  for await (const chunk of req) body += chunk;
  // Stateless: a server and transport per request.
  const server = build(req.headers["x-fixture-key"]);
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, body ? JSON.parse(body) : undefined);
});
http.listen(0, "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
