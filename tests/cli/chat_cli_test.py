#!/usr/bin/env python3
"""chat_cli_test.py - `qvlm run` and `qvlm chat` as users run them.

run:  the answer on stdout and the thinking on stderr when stdout is not a terminal; bad
      arguments exit 2, a bad model 1.
chat: commands piped on stdin (not a terminal): /image, /stats (reuse numbers checked: each
      turn reuses all of the previous prompt but its 2-token "<think>\\n", and encodes only new
      images), /save and /load (the conversation as JSON messages), /reset, /think; then under
      a pseudo-terminal: the prompt, thinking dimmed, and Ctrl-C stopping an answer but not
      the program.
Usage: chat_cli_test.py QVLM_BIN FIXTURES_DIR TMP_DIR"""
import json, os, pty, re, select, signal, subprocess, sys, time

qvlm, fx, tmp = sys.argv[1:4]
os.makedirs(tmp, exist_ok=True)
model = f"{fx}/tiny-moe/model"
img = [f"{fx}/tiny-moe/images/img0.png", f"{fx}/tiny-moe/images/img1.png", f"{fx}/tiny-moe/images/img3.jpg"]
failures = 0


def check(cond, what, detail=""):
    global failures
    if not cond:
        failures += 1
        print(f"  FAIL: {what}\n{detail}")


def run(args, stdin=None, timeout=120):
    return subprocess.run([qvlm, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_run():
    r = run(["run", "-m", model, "--image", img[0], "-p", "What is this?", "--seed", "4", "--temperature", "1",
             "--max-tokens", "24", "--threads", "1"])
    check(r.returncode == 0, "run exits 0", r.stderr)
    check(r.stderr.strip() != "", "thinking goes to stderr when stdout is not a terminal", r.stderr)
    check("\x1b[" not in r.stdout + r.stderr, "no terminal escapes when not a terminal", repr(r.stdout))
    r2 = run(["run", "-m", model, "-p", "Hi", "--no-think", "--seed", "4", "--temperature", "1", "--max-tokens", "24",
              "--threads", "1", "--stats"])
    check(r2.returncode == 0 and r2.stdout.strip() != "", "--no-think: the answer on stdout", r2.stdout + r2.stderr)
    check(re.search(r"prompt: \d+ tokens", r2.stderr) is not None, "--stats on stderr", r2.stderr)
    same = run(["run", "-m", model, "-p", "Hi", "--no-think", "--seed", "4", "--temperature", "1", "--max-tokens", "24",
                "--threads", "1"])
    check(same.stdout == r2.stdout, "same seed, same answer", same.stdout + "\n---\n" + r2.stdout)
    check(run(["run", "-m", model, "--image", "/no/such.png", "-p", "x"]).returncode == 2, "a missing image: exit 2")
    check(run(["run", "-p", "x"]).returncode == 2, "no model: exit 2")
    check(run(["run", "-m", "/no/such/model", "-p", "x"]).returncode == 1, "a bad model: exit 1")
    check(run(["run", "-m", model, "-p", "x", "--temperature", "hot"]).returncode == 2, "a bad number: exit 2")


def stats_blocks(out):
    """Every /stats block as a dict of the numbers it prints."""
    blocks = []
    for m in re.finditer(r"prompt: (\d+) tokens, reused (\d+) .*?\nimages: (\d+) in the prompt, (\d+) encoded, (\d+) reused",
                         out):
        blocks.append(dict(zip(["prompt", "reused", "images", "encoded", "image_reused"], map(int, m.groups()))))
    return blocks


def test_chat_piped():
    conv = f"{tmp}/conv.json"
    script = "\n".join([
        f"/image {img[0]}", "What is this?", "/stats",
        f"/image {img[1]}", "And this one?", "/stats",
        "Which is brighter?", "/stats",
        f"/save {conv}", "/reset", "/stats", f"/load {conv}",
        f"/image {img[2]}", "One more?", "/stats",
        "/think off", "Answer plainly.", "/stats",
        "/image /no/such/file.png", "/nonsense", "/quit", "this line is never read",
    ]) + "\n"
    r = run(["chat", "-m", model, "--seed", "3", "--temperature", "1", "--max-tokens", "20", "--threads", "1"], stdin=script)
    check(r.returncode == 0, "chat exits 0 at /quit", r.stdout + r.stderr)
    check("\x1b[" not in r.stdout, "no terminal escapes when not a terminal")
    s = stats_blocks(r.stdout)
    check(len(s) == 5, f"5 turns with stats (got {len(s)})", r.stdout)
    if len(s) == 5:
        check(s[0]["reused"] == 0 and s[0]["encoded"] == 1, "turn 1: nothing reused, one image encoded", str(s[0]))
        for a, b, enc in [(0, 1, 1), (1, 2, 0), (2, 3, 1)]:
            check(s[b]["reused"] >= s[a]["prompt"] - 2, f"turn {b + 1} reuses turn {a + 1}'s prompt but 2 tokens", str(s))
            check(s[b]["encoded"] == enc, f"turn {b + 1} encodes {enc} new image(s)", str(s[b]))
        check(s[3]["image_reused"] == 2, "after /load the earlier images are reused, not encoded", str(s[3]))
        check(s[4]["prompt"] > s[3]["prompt"], "turn 5 (thinking off) extends the conversation", str(s))
    check("no turn yet" in r.stdout, "/stats right after /reset")
    check("no such file: /no/such/file.png" in r.stdout, "/image of a missing file")
    check("commands: /image" in r.stdout, "an unknown command lists the commands")
    saved = json.load(open(conv))
    check([m["role"] for m in saved] == ["user", "assistant"] * 3, "the saved conversation", json.dumps(saved)[:400])
    check(saved[0]["content"][0]["type"] == "image_url" and saved[2]["content"][0]["image_url"]["url"].endswith("img1.png"),
          "saved user messages keep their images", json.dumps(saved)[:400])


def read_until(fd, pattern, timeout):
    buf, end = b"", time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if re.search(pattern, buf):
                return buf, True
    return buf, False


def test_chat_tty_ctrl_c():
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(qvlm, [qvlm, "chat", "-m", model, "--seed", "9", "--temperature", "1", "--max-tokens", "3000",
                        "--threads", "1"])
    out, ok = read_until(fd, rb"> $", 60)
    check(ok, "the prompt is shown on a terminal", repr(out[-300:]))
    os.write(fd, b"talk\r")
    out, ok = read_until(fd, rb"\x1b\[2m.{40}", 60)  # thinking, dimmed, streaming
    check(ok, "thinking is dimmed on a terminal", repr(out[-300:]))
    os.write(fd, b"\x03")  # Ctrl-C: SIGINT to the foreground process
    out, ok = read_until(fd, rb"\[stopped\][\s\S]*> $", 30)
    check(ok, "Ctrl-C stops the answer and the prompt comes back", repr(out[-400:]))
    os.write(fd, b"/stats\r")
    out, ok = read_until(fd, rb"prompt: \d+ tokens[\s\S]*> $", 30)
    check(ok, "the program goes on after Ctrl-C", repr(out[-400:]))
    os.write(fd, b"/quit\r")
    read_until(fd, rb"$^", 5)
    _, status = os.waitpid(pid, 0)
    check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"exit 0 after /quit (status {status})")


for t in [test_run, test_chat_piped, test_chat_tty_ctrl_c]:
    before = failures
    t()
    print(("ok " if failures == before else "not ok ") + t.__name__)
sys.exit(1 if failures else 0)
