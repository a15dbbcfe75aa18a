// A bridge between a Rust test and headless Chromium's DevTools protocol, dependency-free:
// Chromium speaks the protocol over a pipe (--remote-debugging-pipe: it reads commands from
// fd 3 and writes answers and events to fd 4, each message ended by a NUL byte); this script
// passes JSON lines from its stdin to that pipe and each message from it as a line on stdout.
// Usage: node cdp_bridge.js <chromium> <user-data-dir>
"use strict";
const { spawn } = require("child_process");
const readline = require("readline");

const [chromium, profile] = process.argv.slice(2);
const child = spawn(chromium, [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
  "--user-data-dir=" + profile, "--remote-debugging-pipe", "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });

let stderr = "";
child.stderr.on("data", (d) => { stderr = (stderr + d).slice(-4000); });
child.on("exit", (code, sig) => {
  process.stdout.write(JSON.stringify({ bridge: "exit", code, signal: sig, stderr }) + "\n");
  process.exit(0);
});
const toChrome = child.stdio[3];
const fromChrome = child.stdio[4];
let buf = Buffer.alloc(0);
fromChrome.on("data", (d) => {
  buf = Buffer.concat([buf, d]);
  let i;
  while ((i = buf.indexOf(0)) >= 0) {
    process.stdout.write(buf.subarray(0, i).toString("utf8") + "\n");
    buf = buf.subarray(i + 1);
  }
});
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim()) toChrome.write(line + "\0");
});
// The test closed stdin (it ended or died): close the browser with it.
process.stdin.on("end", () => { child.kill("SIGTERM"); });
