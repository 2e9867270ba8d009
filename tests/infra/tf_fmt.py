"""The part of ``terraform fmt``'s canonical layout that can be checked without Terraform (which
this machine cannot install: its registry is not reachable): two spaces per nesting level, the
``=`` of adjacent one-line attributes aligned, no tabs or trailing blanks, one final newline.
With ``terraform`` on the PATH the test runs the real ``terraform fmt -check`` instead."""

from __future__ import annotations

import re

_ATTRIBUTE = re.compile(r"^(\s*)([A-Za-z_][\w-]*|\"[^\"]+\")\s*=(?!=)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_COMMENT = re.compile(r"(#|//).*$")
_HEREDOC = re.compile(r"<<-?(\w+)\s*$")


def _balanced(code: str) -> bool:
    return all(code.count(a) == code.count(b) for a, b in ("{}", "[]", "()"))


def _nesting(code: str) -> int:
    return sum(code.count(c) for c in "{[(") - sum(code.count(c) for c in "}])")


def problems(text: str) -> list[str]:
    """What ``terraform fmt`` would change in ``text`` (of the rules above); [] when clean."""
    out = [] if text.endswith("\n") and not text.endswith("\n\n") else ["not one final newline"]
    depth, heredoc = 0, ""
    group: list[tuple[int, int, int]] = []  # adjacent one-line attributes: (line, indent, column of '=')

    def close_group() -> None:
        if len({column for _, _, column in group}) > 1:
            out.append(f"lines {group[0][0]}-{group[-1][0]}: '=' not aligned")
        group.clear()

    for n, line in enumerate(text.splitlines(), 1):
        if heredoc:
            heredoc = "" if line.strip() == heredoc else heredoc
            continue
        if "\t" in line or line != line.rstrip():
            out.append(f"line {n}: a tab or trailing blank")
        stripped = line.strip()
        code = _COMMENT.sub("", _STRING.sub('""', stripped))
        indent = len(line) - len(line.lstrip())
        want = 2 * max(0, depth - (len(code) - len(code.lstrip("}])"))))
        if stripped and not stripped.startswith(("#", "//")) and indent != want:
            out.append(f"line {n}: indented {indent}, expected {want}")
        found = _ATTRIBUTE.match(line)
        if found and _balanced(code):
            if group and group[-1][1] != indent:
                close_group()
            group.append((n, indent, found.end() - 1))
        else:
            close_group()
        if marker := _HEREDOC.search(code):
            heredoc = marker.group(1)
        depth += _nesting(code)
    close_group()
    return out
