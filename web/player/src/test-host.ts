// A minimal MCP Apps host for the browser test: the official AppBridge renders the player in a
// sandboxed iframe under the spec's CSP and forwards tools/call and resources/read to the page's
// `mcpRequest` function (which the test wires to the real stillmotion server).
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

type Forward = (method: string, params: unknown) => Promise<unknown>;
declare global {
  interface Window {
    mcpRequest: Forward;
    mountPlayer: (html: string, csp: string) => Promise<void>;
    sendToolInput: (args: Record<string, unknown>) => Promise<void>;
    sendToolResult: (result: unknown) => Promise<void>;
    hostLog: string[];
  }
}

window.hostLog = [];

window.mountPlayer = async (html: string, csp: string) => {
  const iframe = document.getElementById("view") as HTMLIFrameElement;
  const bridge = new AppBridge(
    null,
    { name: "stillmotion-test-host", version: "1.0.0" },
    { serverTools: {}, serverResources: {}, logging: {} },
    { hostContext: { theme: "light", displayMode: "inline", platform: "web" } },
  );
  bridge.oncalltool = async (params) => {
    window.hostLog.push(`tools/call ${params.name}`);
    return (await window.mcpRequest("tools/call", params)) as never;
  };
  bridge.onreadresource = async (params) => {
    window.hostLog.push(`resources/read ${params.uri}`);
    return (await window.mcpRequest("resources/read", params)) as never;
  };
  bridge.onsizechange = ({ height }) => {
    if (height) iframe.style.height = `${height}px`;
  };
  const ready = new Promise<void>((resolve) => {
    bridge.oninitialized = () => resolve();
  });
  await bridge.connect(new PostMessageTransport(iframe.contentWindow!, iframe.contentWindow!));
  const policy = `<meta http-equiv="Content-Security-Policy" content="${csp.replace(/"/g, "&quot;")}">`;
  iframe.srcdoc = html.replace(/<head>/i, `<head>${policy}`);
  await ready;
  window.sendToolInput = (args) => bridge.sendToolInput({ arguments: args });
  window.sendToolResult = (result) => bridge.sendToolResult(result as never);
};
