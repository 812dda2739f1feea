// unstorage's own http driver against one server speaking unstorage's storage-server protocol:
// what a Nuxt/Nitro app sees. bench/run points it at unstorage's createStorageServer (memory
// driver, server.mjs) and at `larder serve --store memory://` (/unstorage) in the same run.
// Usage: node driver.mjs BASE NAME [SECONDS] [WORKERS]
// Prints one TSV row per case: unstorage-driver, case, NAME, min, median, ops/s
// (3 timed runs after a warm-up; WORKERS concurrent async callers on one client).
import { createStorage } from "unstorage";
import http from "unstorage/drivers/http";

const [base, name, secs = "5", workers = "16"] = process.argv.slice(2);
const seconds = Number(secs);
const storage = createStorage({ driver: http({ base }) });
const value = "x".repeat(4096);
const object = { id: 42, tags: ["a", "b", "c"], nested: { ok: true, text: "y".repeat(200) } };
const ns = `bench${process.pid}`;

async function rate(op, duration) {
  let count = 0;
  const end = performance.now() + duration * 1000;
  await Promise.all(
    Array.from({ length: Number(workers) }, async (_, w) => {
      for (let i = 0; performance.now() < end; i++) {
        await op(w, i);
        count++;
      }
    }),
  );
  return count / duration;
}

await storage.setItem(`${ns}:hot`, value);
await storage.setItem(`${ns}:obj`, object);
for (let i = 0; i < 100; i++) await storage.setItem(`${ns}:list:k${i}`, i);

const cases = {
  "setItem 4 KiB string": (w, i) => storage.setItem(`${ns}:w${w}:${i % 64}`, value),
  "getItem 4 KiB string": () => storage.getItem(`${ns}:hot`),
  "getItem JSON object": () => storage.getItem(`${ns}:obj`),
  "hasItem": () => storage.hasItem(`${ns}:hot`),
  "getKeys (100 keys)": () => storage.getKeys(`${ns}:list`),
};

for (const [label, op] of Object.entries(cases)) {
  await rate(op, 1); // warm-up
  const runs = [];
  for (let r = 0; r < 3; r++) runs.push(await rate(op, seconds));
  runs.sort((a, b) => a - b);
  console.log(["unstorage-driver", label, name, runs[0].toFixed(1), runs[1].toFixed(1), "ops/s"].join("\t"));
}
