"""`edgeprm serve`'s command line: its flags, and a taken port failing before any model loads (the server itself is
tested as a subprocess in tests/serve)."""

import socket

from edgeprm.cli import build_parser, main


def test_a_taken_port_is_an_error_before_loading(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_flags_and_defaults():
    args = build_parser("serve").parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.model) == ("127.0.0.1", 8000, None, None)
    assert args.max_rows == 256 and args.max_queue_rows == 2048 and args.batch_window_ms == 5.0
