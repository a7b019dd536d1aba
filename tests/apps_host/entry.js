// What the test host page imports from the official MCP Apps package (bundled by esbuild).
export { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";
