#!/usr/bin/env bash
# curl_e2e.sh - the 3-turn image conversation with plain curl (JSON built and read with
# python3), streamed (-N, SSE) and not, checking the cache numbers each turn reports: turn N+1
# reuses all of turn N's prompt but the 2 tokens of its "<think>\n" (see openai_e2e.mjs), and
# encodes only the new images. Then SIGTERM: the server must exit 0.
# Usage: curl_e2e.sh QVLM_BIN FIXTURES_DIR
set -euo pipefail
bin=$1 fx=$2
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$bin" serve -m "$fx/tiny-moe/model" --port 0 --threads 1 2>"$tmp/server.log" &
pid=$!
for _ in $(seq 300); do grep -q 'listening on' "$tmp/server.log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$tmp/server.log")
[ -n "$port" ] || { cat "$tmp/server.log"; exit 1; }
url=http://127.0.0.1:$port

# python3 keeps the conversation in $tmp/conv.json and writes each request body.
py() { python3 - "$tmp" "$fx" "$@"; }
py init <<'EOF_PY'
import json, sys
tmp = sys.argv[1]
json.dump([{"role": "system", "content": "You describe pictures."}], open(f"{tmp}/conv.json", "w"))
EOF_PY

# add_user TEXT [IMAGE...]: append a user message; write the request body (stream flag $STREAM).
add_user() {
  py "$STREAM" "$@" <<'EOF_PY'
import base64, json, sys
tmp, fx, stream, text, images = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5:]
conv = json.load(open(f"{tmp}/conv.json"))
mime = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
parts = [{"type": "image_url", "image_url": {"url": f"data:{mime[p.rsplit('.', 1)[1]]};base64," +
          base64.b64encode(open(p, "rb").read()).decode()}} for p in images]
conv.append({"role": "user", "content": parts + [{"type": "text", "text": text}]})
json.dump(conv, open(f"{tmp}/conv.json", "w"))
body = {"model": "tiny", "messages": conv, "max_tokens": 16, "temperature": 1.0, "seed": 3, "stream": stream}
if stream: body["stream_options"] = {"include_usage": True}
json.dump(body, open(f"{tmp}/body.json", "w"))
EOF_PY
}

# check_reply PREV_PROMPT NEW_IMAGES: read the response, check the numbers, append the answer,
# print the prompt length.
check_reply() {
  py "$STREAM" "$@" <<'EOF_PY'
import json, sys
tmp, stream, prev, new_images = sys.argv[1], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
raw = open(f"{tmp}/resp.txt").read()
if stream:
    events = [json.loads(b[6:]) for b in raw.split("\n\n") if b.startswith("data: ") and b[6:] != "[DONE]"]
    assert raw.rstrip().endswith("data: [DONE]"), "stream must end with [DONE]"
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    usage = next(e["usage"] for e in events if e.get("usage"))
    timings = next(e["timings"] for e in events if e.get("usage"))
else:
    r = json.loads(raw)
    content, usage, timings = r["choices"][0]["message"]["content"] or "", r["usage"], r["timings"]
cached = usage["prompt_tokens_details"]["cached_tokens"]
print(f"  prompt {usage['prompt_tokens']}, cached {cached}, images encoded {timings['images_encoded']}", file=sys.stderr)
assert timings["images_encoded"] == new_images, timings
assert timings["cached_n"] == cached
if prev: assert cached >= prev - 2, (cached, prev)
else: assert cached == 0
conv = json.load(open(f"{tmp}/conv.json"))
conv.append({"role": "assistant", "content": content})
json.dump(conv, open(f"{tmp}/conv.json", "w"))
print(usage["prompt_tokens"])
EOF_PY
}

turn() { # STREAM PREV NEW_IMAGES TEXT [IMAGES...]
  STREAM=$1 prev=$2 n=$3; shift 3
  add_user "$@"
  flags=(-sS); [ "$STREAM" = 1 ] && flags+=(-N)
  code=$(curl "${flags[@]}" -o "$tmp/resp.txt" -w '%{http_code}' -H 'Content-Type: application/json' \
         --data-binary @"$tmp/body.json" "$url/v1/chat/completions")
  [ "$code" = 200 ] || { echo "HTTP $code: $(cat "$tmp/resp.txt")" >&2; exit 1; }
  check_reply "$prev" "$n"
}
STREAM=0
img=$fx/tiny-moe/images
echo "plain:" >&2
p1=$(turn 0 0 1 "What is this?" "$img/img0.png")
p2=$(turn 0 "$p1" 1 "And this one?" "$img/img1.png")
p3=$(turn 0 "$p2" 0 "Which is brighter?")
echo "streamed, same conversation continued:" >&2
p4=$(turn 1 "$p3" 1 "Now this?" "$img/img3.jpg")
p5=$(turn 1 "$p4" 0 "Summarise.")
p6=$(turn 1 "$p5" 1 "Last one." "$fx/../fuzz/corpus/image/lossy.webp")

kill -TERM $pid
wait $pid
rc=$?
grep -q 'Sanitizer\|runtime error' "$tmp/server.log" && { cat "$tmp/server.log"; exit 1; }
[ $rc = 0 ] || { echo "server exit $rc"; cat "$tmp/server.log"; exit 1; }
echo "curl_e2e: ok"
