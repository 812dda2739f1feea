// Drives `larder serve`'s /unstorage with unstorage's own http driver, and the compare-and-swap
// exchanges of unstorage PR #772 with plain fetch. Run by crates/larder-server/tests/unstorage.rs
// as `node --input-type=module` (script on stdin) in the directory where package.json here is
// installed, so `unstorage` resolves to the pinned package.
//
// Env: LARDER_URL (the server's root URL), LARDER_NS (a key namespace no one else uses),
// LARDER_TOKEN (optional bearer token; then an anonymous client must be refused).
// Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createStorage } from "unstorage";
import http from "unstorage/drivers/http";

const root = process.env.LARDER_URL;
const ns = process.env.LARDER_NS;
const token = process.env.LARDER_TOKEN;
assert.ok(root && ns, "LARDER_URL and LARDER_NS are required");
setTimeout(() => {
  console.error("timed out after 120 s");
  process.exit(2);
}, 120_000).unref();

const base = `${root}/unstorage`;
const auth = token ? { authorization: `Bearer ${token}` } : {};
const driver = http({ base, headers: auth });
const storage = createStorage({ driver });
const etagOf = (bytes) => `"${createHash("sha256").update(bytes).digest("hex")}"`;
const url = (key) => `${base}/${key.split(":").map(encodeURIComponent).join("/")}`;
const req = (key, init = {}) =>
  fetch(url(key), { ...init, headers: { ...auth, ...init.headers } });
const statusOf = (err) => err?.response?.status ?? err?.status;

let step = "";
async function check(name, fn) {
  step = name;
  await fn();
  console.log(`ok - ${name}`);
}

try {
  await check("strings, numbers and objects round-trip through setItem/getItem", async () => {
    await storage.setItem(`${ns}:str`, "hello world");
    assert.equal(await storage.getItem(`${ns}:str`), "hello world");
    await storage.setItem(`${ns}:num`, 42);
    assert.equal(await storage.getItem(`${ns}:num`), 42);
    const obj = { a: 1, list: [true, null, "x"], nested: { text: "é ✓ 𝄞" } };
    await storage.setItem(`${ns}:obj`, obj);
    assert.deepEqual(await storage.getItem(`${ns}:obj`), obj);
    // The stored bytes are unstorage's serialization, with their SHA-256 ETag.
    const head = await req(`${ns}:obj`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("etag"), etagOf(JSON.stringify(obj)));
  });

  await check("hasItem and getItem of a missing key", async () => {
    assert.equal(await storage.hasItem(`${ns}:str`), true);
    assert.equal(await storage.hasItem(`${ns}:missing`), false);
    assert.equal(await storage.getItem(`${ns}:missing`), null);
  });

  await check("setItemRaw/getItemRaw keep binary bytes exact", async () => {
    const bytes = new Uint8Array(4096).map((_, i) => (i * 7) % 256);
    await storage.setItemRaw(`${ns}:bin`, bytes);
    const got = await storage.getItemRaw(`${ns}:bin`);
    assert.deepEqual(new Uint8Array(got), bytes);
    const head = await req(`${ns}:bin`, { method: "HEAD" });
    assert.equal(head.headers.get("etag"), etagOf(bytes));
    // (getItemRaw of a missing key is not checked: unstorage 1.17's http driver reads
    // `_data` of the null its 404 handler returns and throws a TypeError, whatever the server.)
  });

  await check("getMeta: mtime, and ttl for a value written with one", async () => {
    const before = Date.now();
    await storage.setItem(`${ns}:ttl`, "expiring", { ttl: 120 });
    const meta = await storage.getMeta(`${ns}:ttl`);
    assert.ok(meta.mtime instanceof Date, `mtime ${meta.mtime}`);
    // Last-Modified has whole seconds.
    assert.ok(Math.abs(meta.mtime.getTime() - before) < 5_000, `mtime ${meta.mtime}`);
    assert.ok(meta.ttl > 115 && meta.ttl <= 120, `ttl ${meta.ttl}`);
    const plain = await storage.getMeta(`${ns}:str`);
    assert.ok(plain.mtime instanceof Date);
    assert.equal(plain.ttl, undefined);
  });

  await check("getKeys on nested bases", async () => {
    for (const k of ["tree:a", "tree:b:c", "tree:b:d:e", "treetop"]) {
      await storage.setItem(`${ns}:${k}`, k);
    }
    const sorted = async (b) => (await storage.getKeys(b)).sort();
    assert.deepEqual(await sorted(`${ns}:tree`), [
      `${ns}:tree:a`,
      `${ns}:tree:b:c`,
      `${ns}:tree:b:d:e`,
    ]);
    assert.deepEqual(await sorted(`${ns}:tree:b`), [`${ns}:tree:b:c`, `${ns}:tree:b:d:e`]);
    assert.deepEqual(await sorted(`${ns}:tree:b:d:`), [`${ns}:tree:b:d:e`]);
    assert.deepEqual(await sorted(`${ns}:nothing`), []);
    const all = await sorted(ns);
    for (const k of ["str", "num", "obj", "bin", "ttl", "tree:a", "treetop"]) {
      assert.ok(all.includes(`${ns}:${k}`), `${k} in ${all}`);
    }
  });

  await check("removeItem, twice", async () => {
    await storage.removeItem(`${ns}:str`);
    assert.equal(await storage.hasItem(`${ns}:str`), false);
    await storage.removeItem(`${ns}:str`); // idempotent, as unstorage's removeItem is
  });

  // clear(base) is called on the driver: unstorage 1.17's createStorage().clear(base) only
  // reaches drivers mounted at or under `base`, so with the driver at the root it sends nothing.
  await check("clear(base) removes only what is under the base", async () => {
    await driver.clear(`${ns}:tree:b`);
    assert.deepEqual(await storage.getKeys(`${ns}:tree`), [`${ns}:tree:a`]);
    assert.equal(await storage.getItem(`${ns}:treetop`), "treetop");
  });

  await check("#772 create-only: If-None-Match: *", async () => {
    const k = `${ns}:cas:ref`;
    let r = await req(k, { method: "PUT", body: "c1", headers: { "if-none-match": "*" } });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "OK");
    assert.equal(r.headers.get("etag"), etagOf("c1"));
    r = await req(k, { method: "PUT", body: "c2", headers: { "if-none-match": "*" } });
    assert.equal(r.status, 412);
    assert.equal(r.headers.get("etag"), etagOf("c1"), "a 412 names the current ETag");
    const body = await r.json();
    assert.equal(body.statusCode, 412);
    assert.equal(await storage.getItem(k), "c1");
  });

  await check("#772 swap, and a stale swap is 412", async () => {
    const k = `${ns}:cas:ref`;
    const e1 = (await req(k, { method: "HEAD" })).headers.get("etag");
    let r = await req(k, { method: "PUT", body: "c2", headers: { "if-match": e1 } });
    assert.equal(r.status, 200);
    const e2 = r.headers.get("etag");
    assert.equal(e2, etagOf("c2"));
    r = await req(k, { method: "PUT", body: "c3", headers: { "if-match": e1 } });
    assert.equal(r.status, 412);
    assert.equal(r.headers.get("etag"), e2);
    assert.equal(await storage.getItem(k), "c2");
    // unstorage 1.17's own driver carries the condition through its `headers` option.
    await assert.rejects(
      storage.setItem(k, "c4", { headers: { "if-match": e1 } }),
      (err) => statusOf(err) === 412,
    );
    await storage.setItem(k, "c4", { headers: { "if-match": e2 } });
    assert.equal(await storage.getItem(k), "c4");
  });

  await check("#772 If-Match: * needs a current value", async () => {
    const k = `${ns}:cas:star`;
    let r = await req(k, { method: "PUT", body: "x", headers: { "if-match": "*" } });
    assert.equal(r.status, 412);
    assert.equal(await storage.hasItem(k), false);
    await storage.setItem(k, "first");
    r = await req(k, { method: "PUT", body: "second", headers: { "if-match": "*" } });
    assert.equal(r.status, 200);
    assert.equal(await storage.getItem(k), "second");
  });

  await check("GET with a matching If-None-Match is 304; ETag on GET and HEAD", async () => {
    const k = `${ns}:cas:star`;
    const got = await req(k);
    const etag = got.headers.get("etag");
    assert.equal(etag, etagOf("second"));
    assert.equal(await got.text(), "second");
    let r = await req(k, { headers: { "if-none-match": etag } });
    assert.equal(r.status, 304);
    assert.equal(r.headers.get("etag"), etag);
    r = await req(k, { headers: { "if-none-match": etagOf("other") } });
    assert.equal(r.status, 200);
  });

  await check("conditional DELETE (If-Match)", async () => {
    const k = `${ns}:cas:star`;
    const etag = (await req(k, { method: "HEAD" })).headers.get("etag");
    let r = await req(k, { method: "DELETE", headers: { "if-match": etagOf("stale") } });
    assert.equal(r.status, 412);
    assert.equal(await storage.hasItem(k), true);
    r = await req(k, { method: "DELETE", headers: { "if-match": etag } });
    assert.equal(r.status, 200);
    assert.equal(await storage.hasItem(k), false);
  });

  await check("16 concurrent read-modify-write increments lose nothing", async () => {
    const k = `${ns}:cas:counter`;
    const r = await req(k, { method: "PUT", body: "0", headers: { "if-none-match": "*" } });
    assert.equal(r.status, 200);
    let conflicts = 0;
    const worker = async () => {
      for (;;) {
        const cur = await req(k);
        assert.equal(cur.status, 200);
        const etag = cur.headers.get("etag");
        const n = Number(await cur.text());
        const put = await req(k, {
          method: "PUT",
          body: String(n + 1),
          headers: { "if-match": etag },
        });
        if (put.status === 200) return;
        assert.equal(put.status, 412, `unexpected ${put.status}`);
        conflicts++;
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    assert.equal(await storage.getItem(k), 16);
    console.log(`  (${conflicts} lost races retried)`);
  });

  await check("one object, one ETag, through /unstorage and /v1/objects", async () => {
    const k = `${ns}:x:shared`;
    await storage.setItem(k, { v: 1 });
    const viaUnstorage = (await req(k, { method: "HEAD" })).headers.get("etag");
    const native = `${root}/v1/objects/${ns}/x/shared`;
    let r = await fetch(native, { headers: auth });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("etag"), viaUnstorage);
    assert.equal(await r.text(), JSON.stringify({ v: 1 }));
    r = await fetch(native, {
      method: "PUT",
      body: "written natively",
      headers: { ...auth, "if-match": viaUnstorage },
    });
    assert.equal(r.status, 200);
    const nativeEtag = r.headers.get("etag");
    assert.equal(await storage.getItem(k), "written natively");
    assert.equal((await req(k, { method: "HEAD" })).headers.get("etag"), nativeEtag);
    // A swap through /unstorage with the native ETag, then the native side sees that one.
    r = await req(k, { method: "PUT", body: "back", headers: { "if-match": nativeEtag } });
    assert.equal(r.status, 200);
    const back = await fetch(native, { method: "HEAD", headers: auth });
    assert.equal(back.headers.get("etag"), r.headers.get("etag"));
  });

  if (token) {
    await check("without the token, the driver is refused", async () => {
      const anon = createStorage({ driver: http({ base }) });
      await assert.rejects(anon.getItem(`${ns}:num`), (err) => statusOf(err) === 401);
      await assert.rejects(anon.setItem(`${ns}:num`, 1), (err) => statusOf(err) === 401);
    });
  }

  await check("clear(namespace) leaves nothing", async () => {
    await driver.clear(ns);
    assert.deepEqual(await storage.getKeys(ns), []);
  });
} catch (err) {
  console.error(`FAILED: ${step}`);
  console.error(err);
  process.exit(1);
}
