"""boto3 (and curl) against `larder serve --s3-listen`: every supported operation and condition.

Run by crates/larder-cli/tests/s3_endpoint.rs:
    python3 clients.py ENDPOINT BUCKET WRITER_KEY WRITER_SECRET READER_KEY READER_SECRET
The reader key may only read keys under BUCKET/public/. Exits non-zero on the first failure.
"""

import base64
import hashlib
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

import boto3
import botocore
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

endpoint, bucket, wkey, wsecret, rkey, rsecret = sys.argv[1:7]


def client(key, secret, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                      retries={"max_attempts": 1}, **cfg),
    )


s3 = client(wkey, wsecret)
reader = client(rkey, rsecret)


def ok(name):
    print(f"ok {name}", flush=True)


def fails(expected_status, expected_code, f):
    """f() must fail with this HTTP status (and S3 error code, unless None)."""
    try:
        f()
    except botocore.exceptions.ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        code = e.response["Error"]["Code"]
        assert status == expected_status, (status, code, e.response)
        assert expected_code is None or code == expected_code, (status, code, e.response)
        return e.response
    raise AssertionError(f"expected {expected_status} {expected_code}, the call succeeded")


def body(key, client_=None):
    return (client_ or s3).get_object(Bucket=bucket, Key=key)["Body"].read()


def sha256_etag(data):
    return '"' + hashlib.sha256(data).hexdigest() + '"'


# --- buckets ---
fails(404, None, lambda: s3.head_bucket(Bucket=bucket))
s3.create_bucket(Bucket=bucket)
fails(409, "BucketAlreadyOwnedByYou", lambda: s3.create_bucket(Bucket=bucket))
s3.head_bucket(Bucket=bucket)
assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0, "the bucket marker is hidden"
ok("buckets: create, create again 409, head, list; the marker is hidden")

# --- put / get / head: one ETag, Content-Type and x-amz-meta-* kept ---
put = s3.put_object(Bucket=bucket, Key="docs/a.txt", Body=b"hello world",
                    ContentType="text/plain", Metadata={"owner": "ann", "n": "1"})
assert put["ETag"] == sha256_etag(b"hello world"), put["ETag"]
got = s3.get_object(Bucket=bucket, Key="docs/a.txt")
assert got["Body"].read() == b"hello world"
assert got["ETag"] == put["ETag"] and got["ContentType"] == "text/plain"
assert got["Metadata"] == {"owner": "ann", "n": "1"}, got["Metadata"]
head = s3.head_object(Bucket=bucket, Key="docs/a.txt")
assert head["ETag"] == put["ETag"] and head["ContentLength"] == 11
assert head["Metadata"] == {"owner": "ann", "n": "1"}
fails(404, "NoSuchKey", lambda: s3.get_object(Bucket=bucket, Key="docs/missing"))
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="docs/missing"))
ok("put/get/head: the ETag is the quoted SHA-256; Content-Type and metadata kept")

# --- ranges ---
assert s3.get_object(Bucket=bucket, Key="docs/a.txt", Range="bytes=0-4")["Body"].read() == b"hello"
r = s3.get_object(Bucket=bucket, Key="docs/a.txt", Range="bytes=6-")
assert r["Body"].read() == b"world" and r["ContentRange"] == "bytes 6-10/11", r["ContentRange"]
assert s3.get_object(Bucket=bucket, Key="docs/a.txt", Range="bytes=-3")["Body"].read() == b"rld"
fails(416, "InvalidRange", lambda: s3.get_object(Bucket=bucket, Key="docs/a.txt", Range="bytes=50-60"))
ok("ranges: bounded, open, suffix, unsatisfiable 416")

# --- conditional put ---
c1 = s3.put_object(Bucket=bucket, Key="cas/x", Body=b"one", IfNoneMatch="*")
fails(412, "PreconditionFailed", lambda: s3.put_object(Bucket=bucket, Key="cas/x", Body=b"two", IfNoneMatch="*"))
assert body("cas/x") == b"one"
c2 = s3.put_object(Bucket=bucket, Key="cas/x", Body=b"two", IfMatch=c1["ETag"])
fails(412, "PreconditionFailed", lambda: s3.put_object(Bucket=bucket, Key="cas/x", Body=b"three", IfMatch=c1["ETag"]))
assert body("cas/x") == b"two"
fails(412, "PreconditionFailed", lambda: s3.put_object(Bucket=bucket, Key="cas/none", Body=b"x", IfMatch=c1["ETag"]))
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="cas/none"))
ok("put: create-only twice (201 then 412), current If-Match ok, stale If-Match 412, If-Match on nothing 412")

# --- conditional get / head ---
fails(304, None, lambda: s3.get_object(Bucket=bucket, Key="cas/x", IfNoneMatch=c2["ETag"]))
assert s3.get_object(Bucket=bucket, Key="cas/x", IfNoneMatch=c1["ETag"])["Body"].read() == b"two"
assert s3.get_object(Bucket=bucket, Key="cas/x", IfMatch=c2["ETag"])["Body"].read() == b"two"
fails(412, "PreconditionFailed", lambda: s3.get_object(Bucket=bucket, Key="cas/x", IfMatch=c1["ETag"]))
modified = s3.head_object(Bucket=bucket, Key="cas/x")["LastModified"]
fails(304, None, lambda: s3.get_object(Bucket=bucket, Key="cas/x", IfModifiedSince=modified))
past = modified.replace(year=modified.year - 1)
assert s3.get_object(Bucket=bucket, Key="cas/x", IfModifiedSince=past)["Body"].read() == b"two"
fails(412, "PreconditionFailed", lambda: s3.get_object(Bucket=bucket, Key="cas/x", IfUnmodifiedSince=past))
assert s3.get_object(Bucket=bucket, Key="cas/x", IfUnmodifiedSince=modified)["Body"].read() == b"two"
fails(304, None, lambda: s3.head_object(Bucket=bucket, Key="cas/x", IfNoneMatch=c2["ETag"]))
fails(412, None, lambda: s3.head_object(Bucket=bucket, Key="cas/x", IfMatch=c1["ETag"]))
ok("get/head: If-None-Match 304, If-Match 412, If-Modified-Since 304, If-Unmodified-Since 412")

# --- conditional delete ---
fails(412, "PreconditionFailed", lambda: s3.delete_object(Bucket=bucket, Key="cas/x", IfMatch=c1["ETag"]))
assert body("cas/x") == b"two"
s3.delete_object(Bucket=bucket, Key="cas/x", IfMatch=c2["ETag"])
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="cas/x"))
s3.delete_object(Bucket=bucket, Key="cas/x")  # deleting nothing succeeds, as in S3
ok("delete: stale If-Match 412, current If-Match deletes, unconditional delete of nothing 204")

# --- copy ---
src = s3.put_object(Bucket=bucket, Key="copy/src", Body=b"source", ContentType="text/x-src", Metadata={"k": "v"})
cp = s3.copy_object(Bucket=bucket, Key="copy/dst", CopySource={"Bucket": bucket, "Key": "copy/src"})
assert cp["CopyObjectResult"]["ETag"] == src["ETag"]
h = s3.head_object(Bucket=bucket, Key="copy/dst")
assert h["ContentType"] == "text/x-src" and h["Metadata"] == {"k": "v"}
s3.copy_object(Bucket=bucket, Key="copy/replaced", CopySource=f"{bucket}/copy/src",
               MetadataDirective="REPLACE", ContentType="text/y", Metadata={"new": "1"})
h = s3.head_object(Bucket=bucket, Key="copy/replaced")
assert h["ContentType"] == "text/y" and h["Metadata"] == {"new": "1"}, h
s3.copy_object(Bucket=bucket, Key="copy/c1", CopySource=f"{bucket}/copy/src", CopySourceIfMatch=src["ETag"])
fails(412, "PreconditionFailed", lambda: s3.copy_object(Bucket=bucket, Key="copy/c2", CopySource=f"{bucket}/copy/src",
                                                        CopySourceIfMatch=c1["ETag"]))
fails(412, "PreconditionFailed", lambda: s3.copy_object(Bucket=bucket, Key="copy/c2", CopySource=f"{bucket}/copy/src",
                                                        CopySourceIfNoneMatch=src["ETag"]))
src_modified = s3.head_object(Bucket=bucket, Key="copy/src")["LastModified"]
fails(412, "PreconditionFailed", lambda: s3.copy_object(Bucket=bucket, Key="copy/c2", CopySource=f"{bucket}/copy/src",
                                                        CopySourceIfModifiedSince=src_modified))
fails(412, "PreconditionFailed", lambda: s3.copy_object(Bucket=bucket, Key="copy/c2", CopySource=f"{bucket}/copy/src",
                                                        CopySourceIfUnmodifiedSince=past))
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="copy/c2"))


def copy_create_only(target):
    def add_header(request, **kwargs):
        request.headers["If-None-Match"] = "*"
    c = client(wkey, wsecret)
    c.meta.events.register("before-sign.s3.CopyObject", add_header)
    return c.copy_object(Bucket=bucket, Key=target, CopySource=f"{bucket}/copy/src")


copy_create_only("copy/once")
fails(412, "PreconditionFailed", lambda: copy_create_only("copy/once"))
ok("copy: metadata COPY and REPLACE, x-amz-copy-source-if-{match,none-match,modified-since,unmodified-since}, "
   "If-None-Match: * on the target")

# --- listing ---
for k in ["list/a", "list/b/1", "list/b/2", "list/c", "list/d/1", "list/e"]:
    s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
r = s3.list_objects_v2(Bucket=bucket, Prefix="list/", Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["list/a", "list/c", "list/e"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["list/b/", "list/d/"], r
keys, token, pages = [], None, 0
while True:
    kw = {"ContinuationToken": token} if token else {}
    r = s3.list_objects_v2(Bucket=bucket, Prefix="list/", MaxKeys=2, **kw)
    keys += [o["Key"] for o in r.get("Contents", [])]
    pages += 1
    if not r["IsTruncated"]:
        break
    token = r["NextContinuationToken"]
assert keys == ["list/a", "list/b/1", "list/b/2", "list/c", "list/d/1", "list/e"] and pages == 3, (keys, pages)
r = s3.list_objects_v2(Bucket=bucket, Prefix="list/", StartAfter="list/c")
assert [o["Key"] for o in r["Contents"]] == ["list/d/1", "list/e"], r
assert r["Contents"][0]["ETag"] == sha256_etag(b"list/d/1")
r = s3.list_objects(Bucket=bucket, Prefix="list/", MaxKeys=4)
assert [o["Key"] for o in r["Contents"]] == ["list/a", "list/b/1", "list/b/2", "list/c"] and r["IsTruncated"]
r = s3.list_objects(Bucket=bucket, Prefix="list/", Marker=r["NextMarker"])
assert [o["Key"] for o in r["Contents"]] == ["list/d/1", "list/e"] and not r["IsTruncated"], r
r = s3.list_objects(Bucket=bucket, Prefix="list/", Delimiter="/")
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["list/b/", "list/d/"]
s3.put_object(Bucket=bucket, Key="list/odd key+plus%.txt", Body=b"x")
r = s3.list_objects_v2(Bucket=bucket, Prefix="list/odd")  # boto3 asks for encoding-type=url
assert [o["Key"] for o in r["Contents"]] == ["list/odd key+plus%.txt"], r
ok("list: v2 prefix, delimiter, max-keys + continuation-token, start-after; v1 marker; url encoding")

# --- delete objects ---
r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "list/a"}, {"Key": "list/c"}, {"Key": "list/none"}]})
assert sorted(d["Key"] for d in r["Deleted"]) == ["list/a", "list/c", "list/none"], r
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="list/a"))
e_etag = s3.head_object(Bucket=bucket, Key="list/e")["ETag"]
r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "list/e", "ETag": c1["ETag"]}]})
assert r["Errors"][0]["Code"] == "PreconditionFailed", r
assert s3.head_object(Bucket=bucket, Key="list/e")["ETag"] == e_etag
ok("delete objects: several at once, missing ones count as deleted, a stale per-object ETag refused")

# --- multipart ---
part1, part2 = b"a" * (5 << 20), b"tail"


def upload(key, **complete_kw):
    mp = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-mp", Metadata={"mp": "yes"})
    uid = mp["UploadId"]
    p1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=part1)
    p2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=part2)
    parts = {"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]}
    return uid, lambda **kw: s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                                          MultipartUpload=parts, **{**complete_kw, **kw})


uid, complete = upload("mp/obj")
listed = s3.list_parts(Bucket=bucket, Key="mp/obj", UploadId=uid)
assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 << 20), (2, 4)], listed
assert uid in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix="mp/")["Uploads"]]
done = complete(IfNoneMatch="*")
assert done["ETag"] == sha256_etag(part1 + part2), done
assert body("mp/obj") == part1 + part2
h = s3.head_object(Bucket=bucket, Key="mp/obj")
assert h["ContentType"] == "application/x-mp" and h["Metadata"] == {"mp": "yes"}
assert uid not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
uid, complete = upload("mp/obj")
fails(412, "PreconditionFailed", lambda: complete(IfNoneMatch="*"))
fails(412, "PreconditionFailed", lambda: complete(IfMatch=c1["ETag"]))
s3.put_object(Bucket=bucket, Key="mp/obj", Body=b"changed meanwhile")
fails(412, "PreconditionFailed", lambda: complete(IfMatch=done["ETag"]))
assert body("mp/obj") == b"changed meanwhile"
current = s3.head_object(Bucket=bucket, Key="mp/obj")["ETag"]
assert complete(IfMatch=current)["ETag"] == done["ETag"]
uid, complete = upload("mp/aborted")
s3.abort_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=uid)
fails(404, "NoSuchUpload", lambda: complete())
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="mp/aborted"))
mp = s3.create_multipart_upload(Bucket=bucket, Key="mp/bad")
p1 = s3.upload_part(Bucket=bucket, Key="mp/bad", UploadId=mp["UploadId"], PartNumber=1, Body=b"x")
fails(400, "InvalidPart", lambda: s3.complete_multipart_upload(
    Bucket=bucket, Key="mp/bad", UploadId=mp["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": c1["ETag"]}]}))
ok("multipart: create, upload part, list parts, list uploads, complete with If-None-Match: * (ok then 412), "
   "stale and current If-Match at completion, abort, wrong part ETag")

# --- integrity ---
s3.put_object(Bucket=bucket, Key="sum/ok", Body=b"checked", ChecksumAlgorithm="SHA256")
s3.put_object(Bucket=bucket, Key="sum/ok", Body=b"checked", ChecksumAlgorithm="SHA1")
s3.put_object(Bucket=bucket, Key="sum/ok", Body=b"checked",
              ContentMD5=base64.b64encode(hashlib.md5(b"checked").digest()).decode())
wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
fails(400, "BadDigest", lambda: s3.put_object(Bucket=bucket, Key="sum/bad", Body=b"checked", ChecksumSHA256=wrong))
fails(400, "BadDigest", lambda: s3.put_object(Bucket=bucket, Key="sum/bad", Body=b"checked",
                                              ChecksumCRC32=base64.b64encode(b"\0\0\0\0").decode()))
fails(400, "BadDigest", lambda: s3.put_object(
    Bucket=bucket, Key="sum/bad", Body=b"checked",
    ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode()))
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="sum/bad"))
fails(400, "BadDigest", lambda: s3.put_object(Bucket=bucket, Key="sum/ok", Body=b"replaced", ChecksumSHA256=wrong))
assert body("sum/ok") == b"checked"


def crc32c(data):
    """CRC32C (Castagnoli), bit by bit: botocore needs awscrt for it."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


class StreamingAuth(S3SigV4Auth):
    """SigV4 for a streaming body: the payload hash is the streaming marker, not a digest."""

    def payload(self, request):
        return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def chunked_put(key, data, crc, algorithm="crc32"):
    """A PUT with an aws-chunked body and a trailing checksum, as current SDKs send."""
    trailer = f"x-amz-checksum-{algorithm}"
    payload = b"%x\r\n%s\r\n0\r\n%s:%s\r\n\r\n" % (len(data), data, trailer.encode(), crc.encode())
    url = f"{endpoint}/{bucket}/{key}"
    req = AWSRequest(method="PUT", url=url, data=payload, headers={
        "Content-Encoding": "aws-chunked",
        "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "X-Amz-Decoded-Content-Length": str(len(data)),
        "X-Amz-Trailer": trailer,
        "Content-Length": str(len(payload)),
    })
    StreamingAuth(Credentials(wkey, wsecret), "s3", "us-east-1").add_auth(req)
    r = urllib.request.Request(url, data=payload, method="PUT", headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


good = base64.b64encode(zlib.crc32(b"chunked body").to_bytes(4, "big")).decode()
assert chunked_put("sum/chunked", b"chunked body", good) == 200
assert body("sum/chunked") == b"chunked body"
good_c = base64.b64encode(crc32c(b"chunked body").to_bytes(4, "big")).decode()
assert chunked_put("sum/chunked-c", b"chunked body", good_c, "crc32c") == 200
assert chunked_put("sum/chunked-bad", b"chunked body", good, "crc32c") == 400
assert chunked_put("sum/chunked-bad", b"chunked body", base64.b64encode(b"\1\2\3\4").decode()) == 400
fails(404, None, lambda: s3.head_object(Bucket=bucket, Key="sum/chunked-bad"))
ok("integrity: Content-MD5, CRC32, SHA1, SHA256 headers checked; aws-chunked with a trailing CRC32 or CRC32C; "
   "a mismatch stores nothing")

# --- presigned URLs with curl ---
url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "presigned/p"}, ExpiresIn=300)
out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                      "--data-binary", "via curl", url], capture_output=True, text=True, check=True)
assert out.stdout == "200", out
url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned/p"}, ExpiresIn=300)
out = subprocess.run(["curl", "-sS", url], capture_output=True, check=True)
assert out.stdout == b"via curl", out
tampered = url.replace("presigned/p", "presigned/q")
out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", tampered],
                     capture_output=True, text=True, check=True)
assert out.stdout == "403", out
ok("presigned: PUT and GET with curl; a URL for another key refused 403")

# --- authentication and scopes ---
fails(403, "SignatureDoesNotMatch", lambda: client(wkey, "not-the-secret-at-all").list_objects_v2(Bucket=bucket))
fails(403, "InvalidAccessKeyId", lambda: client("AKIDUNKNOWN", "whatever-secret-123").list_objects_v2(Bucket=bucket))
out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{endpoint}/{bucket}/presigned/p"],
                     capture_output=True, text=True, check=True)
assert out.stdout == "403", out
s3.put_object(Bucket=bucket, Key="public/r", Body=b"readable")
assert body("public/r", reader) == b"readable"
assert [o["Key"] for o in reader.list_objects_v2(Bucket=bucket, Prefix="public/")["Contents"]] == ["public/r"]
fails(403, "AccessDenied", lambda: reader.put_object(Bucket=bucket, Key="public/w", Body=b"x"))
fails(403, "AccessDenied", lambda: reader.get_object(Bucket=bucket, Key="docs/a.txt"))
fails(403, "AccessDenied", lambda: reader.list_objects_v2(Bucket=bucket))
fails(403, "AccessDenied", lambda: reader.delete_object(Bucket=bucket, Key="public/r"))
fails(403, "AccessDenied", lambda: reader.copy_object(Bucket=bucket, Key="public/c", CopySource=f"{bucket}/docs/a.txt"))
fails(403, "AccessDenied", lambda: reader.create_multipart_upload(Bucket=bucket, Key="public/m"))
ok("auth: wrong secret, unknown key and unsigned requests 403; a read-only key scoped to a prefix "
   "refused writes and keys outside it 403")

# --- 8 concurrent read-modify-write clients with If-Match ---
s3.put_object(Bucket=bucket, Key="race/counter", Body=b"0")
WORKERS, INCREMENTS = 8, 12
conflicts = [0] * WORKERS


def worker(i):
    c = client(wkey, wsecret)
    for _ in range(INCREMENTS):
        while True:
            g = c.get_object(Bucket=bucket, Key="race/counter")
            n = int(g["Body"].read())
            try:
                c.put_object(Bucket=bucket, Key="race/counter", Body=str(n + 1).encode(), IfMatch=g["ETag"])
                break
            except botocore.exceptions.ClientError as e:
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, e.response
                conflicts[i] += 1


threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
final = int(body("race/counter"))
assert final == WORKERS * INCREMENTS, (final, conflicts)
ok(f"race: {WORKERS} boto3 clients x {INCREMENTS} If-Match increments = {final}, "
   f"{sum(conflicts)} lost races retried, nothing lost")

# --- delete bucket only when empty ---
fails(409, "BucketNotEmpty", lambda: s3.delete_bucket(Bucket=bucket))
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    keys += [o["Key"] for o in page.get("Contents", [])]
for i in range(0, len(keys), 1000):
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
    s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
s3.delete_bucket(Bucket=bucket)
fails(404, None, lambda: s3.head_bucket(Bucket=bucket))
fails(404, "NoSuchBucket", lambda: s3.delete_bucket(Bucket=bucket))
ok("delete bucket: refused 409 while not empty, then deleted; again 404")
print("ALL OK")
