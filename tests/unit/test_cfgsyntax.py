"""The shared HAProxy config lexer: quoting, escapes, comments, units, error locations."""
import pytest

from edgestick.cfgsyntax import ConfigError, parse_size, parse_time_ms, read_file, read_lines, split_words


@pytest.mark.parametrize("text, words", [
    ("  bind *:80   # comment", ("bind", "*:80")),
    ("http-request deny if { sc_http_req_rate(0) gt 100 }",
     ("http-request", "deny", "if", "{", "sc_http_req_rate(0)", "gt", "100", "}")),
    ("a 'b c' \"d e\" f\\ g", ("a", "b c", "d e", "f g")),
    ("x '#not a comment' \"also # not\"", ("x", "#not a comment", "also # not")),
    ("x 'no $HOME here' \\#y", ("x", "no $HOME here", "#y")),
    ("x \"\"", ("x", "")),
    ("x a\"b\"c", ("x", "abc")),
    # HAProxy turns only these escapes into characters and keeps any other backslash,
    # so that regexes keep theirs
    (r"x a\.b /\1 c\\d \x41 \x4 \t", ("x", r"a\.b", r"/\1", "c\\d", "A", r"\x4", "\t")),
    (r'x "q\"y" "a\$b" \\', ("x", 'q"y', "a$b", "\\")),
])
def test_split_words(text, words):
    assert split_words(text) == words


def test_environment_variables_expand_in_double_quotes_only(monkeypatch):
    monkeypatch.setenv("ES_PORT", "8080")
    assert split_words('bind "127.0.0.1:${ES_PORT}" \'${ES_PORT}\'') == ("bind", "127.0.0.1:8080", "${ES_PORT}")


@pytest.mark.parametrize("text", ["x 'open", 'x "open', "x trailing\\"])
def test_unfinished_quotes_and_escapes_are_errors_with_location(text):
    with pytest.raises(ConfigError) as e:
        list(read_lines(f"global\n{text}\n", "h.cfg"))
    assert str(e.value).startswith("h.cfg:2: ")


def test_lines_keep_file_and_number_and_skip_blank_ones():
    lines = list(read_lines("\n# only a comment\nglobal\n\n  maxconn 10\n", "a.cfg"))
    assert [(l.file, l.lineno, l.words) for l in lines] == [
        ("a.cfg", 3, ("global",)), ("a.cfg", 5, ("maxconn", "10"))]
    assert str(lines[1].error("bad value")) == "a.cfg:5: 'maxconn': bad value"


def test_missing_file_error_names_the_path_without_a_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        read_file(str(tmp_path / "nope.cfg"))
    assert str(e.value) == f"{tmp_path / 'nope.cfg'}: cannot open configuration file: No such file or directory"


@pytest.mark.parametrize("text, ms", [("500", 500), ("10s", 10_000), ("30m", 1_800_000), ("1h", 3_600_000),
                                      ("2d", 172_800_000), ("1000us", 1), ("0", 0)])
def test_time_units(text, ms):
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["", "10x", "-1s", "1.5s", "500us", "25d"])
def test_bad_times(text):
    with pytest.raises(ValueError):
        parse_time_ms(text)


@pytest.mark.parametrize("text, size", [("100", 100), ("200k", 204800), ("1m", 1048576), ("2G", 2 << 30)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5k", "10kb", "k"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)
