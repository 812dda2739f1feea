# Azure Blob emulator for the `azure` driver tests: Azurite 3.35.0 from npm (3.36+ need a newer
# Node than Debian's). Enforces If-Match / If-None-Match on Put Blob, Put Block List and Delete Blob.
LARDER_CI_CACHE="${LARDER_CI_CACHE:-/opt/larder-ci}"
AZ_PORT="${LARDER_AZURITE_PORT:-10000}"
az_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && { exec 3>&- 3<&-; return 0; }; return 1; }
AZURITE_BIN="$LARDER_CI_CACHE/azurite/node_modules/.bin/azurite-blob"
if [ ! -x "$AZURITE_BIN" ]; then
  mkdir -p "$LARDER_CI_CACHE/azurite"
  npm install --prefix "$LARDER_CI_CACHE/azurite" --no-audit --no-fund azurite@3.35.0 \
    >"$LARDER_CI_CACHE/azurite-install.log" 2>&1
fi
if ! az_port_open "$AZ_PORT"; then
  nohup "$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --disableTelemetry \
    --inMemoryPersistence --skipApiVersionCheck >"$LARDER_CI_CACHE/azurite.log" 2>&1 &
  for _ in $(seq 1 60); do az_port_open "$AZ_PORT" && break; sleep 0.5; done
  az_port_open "$AZ_PORT" || { echo "Azurite did not come up on :$AZ_PORT" >&2; return 1; }
fi
# Create the container (Shared Key signed with Azurite's well-known dev key); 409 = exists.
python3 - "$AZ_PORT" <<'PY'
import base64, hashlib, hmac, sys, urllib.request, urllib.error
from email.utils import formatdate
acct = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, ver = formatdate(usegmt=True), "2021-08-06"
path = "/larder-test"
sts = "PUT\n\n\n\n\n\n\n\n\n\n\n\n" + f"x-ms-date:{date}\nx-ms-version:{ver}\n/{acct}/{acct}{path}\nrestype:container"
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/{acct}{path}?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": ver, "Authorization": f"SharedKey {acct}:{sig}", "Content-Length": "0"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    if e.code != 409:
        raise
PY
# Generous bounds for an emulator on a shared, loaded machine (see 10-s3.sh).
EMULATOR_BOUNDS="timeout_ms=60000&retry_timeout_ms=60000"
export LARDER_TEST_AZURE_URL="${LARDER_TEST_AZURE_URL:-azure://larder-test/ci?account=devstoreaccount1&endpoint=http://127.0.0.1:$AZ_PORT/devstoreaccount1&use_emulator=true&$EMULATOR_BOUNDS}"
