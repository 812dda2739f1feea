// unstorage's own HTTP server (createStorageServer) over its memory driver, on node:http.
import { createServer } from "node:http";
import { createStorage } from "unstorage";
import { createStorageServer } from "unstorage/server";

const port = Number(process.argv[2] || 8092);
const storage = createStorage();
const server = createStorageServer(storage);
createServer(server.handle).listen(port, "127.0.0.1", () => console.log(`unstorage on ${port}`));
