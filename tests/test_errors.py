"""snapprof.errors.first_line: the one line kept of a library's longer message (the fleet
engines' errors and the probe loader's replies both use it)."""

from snapprof.errors import first_line


def test_the_first_line_that_is_not_blank():
    assert first_line(OSError("\n  cannot parse footer  \nat offset 4\n")) == "cannot parse footer"
    assert first_line("\n\nerror: unknown type\n") == "error: unknown type"


def test_no_message_gives_the_type_for_an_exception_and_nothing_for_text():
    assert first_line(TimeoutError()) == "TimeoutError"
    assert first_line(ValueError("  \n ")) == "ValueError"
    assert first_line(" \n") == ""
