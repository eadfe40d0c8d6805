"""The installed `bitnet` command generating, chatting and measuring, as a user runs it: through
pipes and on a terminal. Output is compared with the Python API on the same model."""

from __future__ import annotations

import subprocess

import bitnet
from bitnet.api import default_model_path
from cli_helpers import Terminal, bitnet_command, run, run_into_closed_pipe

BUNDLED = str(default_model_path())


def test_generate_streams_with_sampling_options(converted):
    model = str(converted("2b4t-bf16"))
    r = run("generate", "-m", model, "-n", "12", "--temp", "0", "In the beginning")
    assert r.returncode == 0, r.stderr
    expected = bitnet.load(model).generate("In the beginning", max_tokens=12, temperature=0)
    assert r.stdout == expected + ("" if expected.endswith("\n") else "\n")
    args = ("-n", "16", "--temp", "1.1", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.02")
    seeded = [run("generate", "-m", model, *args, "--seed", "7", "Hello") for _ in range(2)]
    assert seeded[0].returncode == 0 and seeded[0].stdout == seeded[1].stdout
    # The exact-top-k output layer gives the same tokens.
    topk = run("generate", "-m", model, *args, "--seed", "7", "--exact-topk", "Hello")
    assert topk.returncode == 0 and topk.stdout == seeded[0].stdout
    # --stop takes one string and may be repeated: the first one found ends the text.
    stop = expected[3:6]
    r = run(
        "generate", "-m", model, "-n", "12", "--temp", "0",
        "--stop", "never-there", "--stop", stop, "--stop", "nor-this", "In the beginning",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected[: expected.find(stop)] + "\n"


def test_generate_reads_the_prompt_from_stdin(converted):
    model = str(converted("2b4t-bf16"))
    piped = run("generate", "-m", model, "-n", "6", "--temp", "0", input="In the beginning")
    direct = run("generate", "-m", model, "-n", "6", "--temp", "0", "In the beginning")
    assert piped.returncode == 0 and piped.stdout == direct.stdout


def test_generate_on_a_terminal_says_how_to_give_the_prompt():
    with Terminal("generate", "-n", "4", "--temp", "0") as t:
        t.read_until("Ctrl-D")  # it says it reads the prompt from the terminal, and how to end
        t.type("In the beginning\n\x04")
        t.read_to_end()
        assert t.wait() == 0


def test_generate_says_why_it_stopped_and_how_fast():
    model = bitnet.load(BUNDLED, n_ctx=32)
    full = model.complete("In the beginning", max_tokens=500, temperature=0)
    assert full.finish_reason == "context"  # a context of 32 fills before 500 tokens
    r = run("generate", "-c", "32", "-n", "500", "--temp", "0", "In the beginning")
    assert r.returncode == 0, r.stderr
    assert r.stdout == full.text + ("" if full.text.endswith("\n") else "\n")
    assert "the context is full (32 tokens" in r.stderr and "-c/--ctx" in r.stderr
    assert f"generated {full.completion_tokens} tokens" in r.stderr and "tokens/s" in r.stderr

    default = bitnet.load(BUNDLED).complete("In the beginning", temperature=0)
    r = run("generate", "--temp", "0", "In the beginning")  # -n left at its default
    if default.finish_reason == "length":
        assert "the default limit" in r.stderr and "-n/--max-tokens" in r.stderr
    r = run("generate", "-n", "8", "--temp", "0", "In the beginning")  # -n given: expected
    assert "limit" not in r.stderr and "tokens/s" in r.stderr

    quiet = run("generate", "-q", "-c", "32", "-n", "500", "--temp", "0", "In the beginning")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == full.text + ("" if full.text.endswith("\n") else "\n")
    verbose = run("generate", "-v", "-n", "4", "In the beginning")
    assert "loaded" in verbose.stderr and "finish reason" in verbose.stderr


def test_ctx_above_the_training_context_warns(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("In the beginning God created the heaven and the earth. " * 20)
    r = run("perplexity", "-c", "512", "-q", str(text))
    assert r.returncode == 0, r.stderr
    assert "warning: -c/--ctx 512 is above the 256 tokens this model was trained on" in r.stderr
    assert r.stdout.startswith("perplexity ")


def test_generate_into_a_closed_pipe():
    status, err = run_into_closed_pipe("generate", "-n", "2000", "--temp", "0", "Hello", keep=20)
    assert status == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err


def test_python_dash_m_bitnet_generates():
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "bitnet", "generate", "-n", "4", "--temp", "0", "-q", "Amen"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    direct = run("generate", "-n", "4", "--temp", "0", "-q", "Amen")
    assert r.returncode == 0 and r.stdout == direct.stdout


def test_perplexity_command(converted, tmp_path):
    text = "In the beginning God created the heaven and the earth. " * 4
    (tmp_path / "t.txt").write_text(text)
    model = str(converted("2b4t-bf16"))
    r = run("perplexity", "-m", model, str(tmp_path / "t.txt"), "--window", "16", "-q")
    assert r.returncode == 0, r.stderr
    expected = bitnet.load(model).perplexity(text, window=16, stride=8)
    assert r.stdout.startswith(f"perplexity {expected:.4f} over ")
    assert "(window 16, stride 8)" in r.stdout


# -- chat, driven through a terminal ----------------------------------------------------------


def test_chat_session_in_a_terminal(converted):
    model_path = str(converted("2b4t-bf16"))
    args = ("chat", "-m", model_path, "--temp", "0", "-n", "8", "--system", "Be brief.")
    with Terminal(*args) as t:
        t.read_until("/help for commands")
        t.read_until("> ")
        t.type("In the beginning\n")
        reply_screen = t.read_until("> ")

        model = bitnet.load(model_path)
        history = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "In the beginning"},
        ]
        reply = model.chat(history, max_tokens=8, temperature=0)
        assert reply.strip() in reply_screen

        t.type("And then?\n")
        second = t.read_until("> ")
        history += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And then?"},
        ]
        assert model.chat(history, max_tokens=8, temperature=0).strip() in second

        t.type("/history\n")
        shown = t.read_until("> ")
        assert "[system] Be brief." in shown and "[user] In the beginning" in shown
        assert "[user] And then?" in shown and "[assistant]" in shown
        t.type("/reset\n")
        assert "(conversation cleared)" in t.read_until("> ")
        t.type("/history\n")
        shown = t.read_until("> ")
        assert "[system] Be brief." in shown and "[user]" not in shown
        t.type("/nonsense\n")
        assert "unknown command /nonsense" in t.read_until("> ")
        t.type("/help\n")
        assert "/reset" in t.read_until("> ")
        t.type("/exit\n")
        end = t.read_to_end()
        assert "2 replies" in end and "tokens/s" in end  # the session's timings
        assert t.wait() == 0


def test_chat_with_the_bundled_model_keeps_fitting_its_context():
    """No -m: the bundled model, which has no chat template (the default one is used). A
    context of 96 tokens fills within a few turns: the oldest exchanges are dropped, with a
    notice, the system prompt stays, and no turn fails."""
    messages = ["In the beginning", "And the earth?", "What of the waters?", "And light?"]
    args = ("chat", "-c", "96", "-n", "24", "--temp", "0", "--system", "Speak as the psalmist.")
    with Terminal(*args) as t:
        t.read_until("default")  # says the model has no template and the default is used
        t.read_until("> ")
        screens = []
        for text in messages:
            t.type(text + "\n")
            screens.append(t.read_until("> "))
        shown = "".join(screens)
        assert "dropped the oldest" in shown and "the system prompt stays" in shown
        assert "error" not in shown.lower()
        t.type("/history\n")
        history = t.read_until("> ")
        assert "[system] Speak as the psalmist." in history
        assert f"[user] {messages[-1]}" in history and f"[user] {messages[0]}" not in history
        t.type("\x04")
        assert t.wait() == 0


def test_chat_over_a_pipe():
    r = run("chat", "-n", "8", "--temp", "0", "-q", input="In the beginning\n/history\n")
    assert r.returncode == 0, r.stderr
    assert "> " not in r.stdout and "[user] In the beginning" in r.stdout


def test_chat_ctrl_c_stops_the_reply_and_ctrl_d_quits(converted):
    # Greedy replies of the tiny model that run far past 200 tokens without an end token, in
    # a context far larger than the tiny model fills quickly: they run until interrupted.
    model_path = str(converted("2b4t-bf16"))
    model = bitnet.load(model_path, n_ctx=1024)
    for text in ("Hello", "The earth"):
        history = [{"role": "user", "content": text}]
        assert len(model.chat(history, max_tokens=200, temperature=0)) < len(
            model.chat(history, max_tokens=240, temperature=0)
        )
    with Terminal("chat", "-m", model_path, "-c", "60000", "-n", "60000", "--temp", "0") as t:
        t.read_until("> ")
        for text in ("Hello", "The earth"):
            t.type(text + "\n")
            t.read_until(text + "\n")  # the echo
            while len(t.screen) - t.pos < 40:
                t.read_some()  # part of the reply is on screen: it is being generated
            t.type("\x03")  # Ctrl-C
            t.read_until("(stopped)")
            t.read_until("> ")
            t.type("/history\n")
            assert f"[user] {text}" in t.read_until("> ")  # the partial reply is kept
            t.type("/reset\n")
            t.read_until("> ")
        t.type("\x04")  # Ctrl-D
        assert t.wait() == 0


def test_cli_module_and_entry_point_agree():
    assert bitnet_command()  # installed
    from bitnet.cli import COMMAND_MODULES, build_parser

    assert "bitnet.server.cli" in COMMAND_MODULES  # `serve` plugs in where the server is built
    parser = build_parser()
    assert parser.prog == "bitnet"


def test_quiet_and_verbose_exclude_each_other():
    r = run("generate", "-q", "-v", "hi")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
