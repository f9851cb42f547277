#!/usr/bin/env python3
"""Validates the nestdnn_msgs interface package with the real rosidl parsers (Debian
python3-rosidl), and checks the Rust message definitions against it.

    /usr/bin/python3 test/msgs/check_msgs.py MSG_DIR [RUST_DEFS.json]

1. every msg/*.msg parses with rosidl_adapter (the .msg parser), converts to IDL as
   rosidl_generate_interfaces does, and that IDL parses with rosidl_parser;
2. every field carries a comment (its unit is documented there);
3. RUST_DEFS.json ({type name: concatenated definition}, written by the Rust test) parses with
   rosidl_adapter section by section, and for nestdnn_msgs types the fields (names, types, order)
   and constants equal those of the .msg files.
Prints one line per check and exits non-zero on any failure.
"""
import json
import sys
import tempfile
from pathlib import Path

from rosidl_adapter.parser import parse_message_file, parse_message_string

SEP = "=" * 80
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def field_sig(msg):
    return [(str(f.type), f.name) for f in msg.fields]


def const_sig(msg):
    return [(c.type, c.name, c.value) for c in msg.constants]


def idl_roundtrip(pkg, path, out):
    """msg -> idl (rosidl_adapter) -> parse (rosidl_parser), as rosidl_generate_interfaces."""
    from rosidl_adapter.msg import convert_msg_to_idl
    from rosidl_parser.parser import parse_idl_file
    from rosidl_parser.definition import IdlLocator, Message
    idl = convert_msg_to_idl(path.parent.parent, pkg, Path("msg") / path.name, out)
    content = parse_idl_file(IdlLocator(out, idl.relative_to(out))).content
    msgs = content.get_elements_of_type(Message)
    return [m.structure.namespaced_type.name for m in msgs], [
        (m.name) for m in msgs[0].structure.members]


def main(argv):
    msg_dir = Path(argv[0])
    files = sorted(msg_dir.glob("*.msg"))
    check(len(files) > 0, f"{msg_dir}: .msg files present")
    parsed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in files:
            try:
                m = parse_message_file("nestdnn_msgs", str(p))
            except Exception as e:  # rosidl raises several exception types
                check(False, f"{p.name}: rosidl_adapter parse: {e}")
                continue
            parsed[p.stem] = m
            check(True, f"{p.name}: rosidl_adapter parse ({len(m.fields)} fields)")
            missing = [f.name for f in m.fields if not "".join(f.annotations.get("comment", [])).strip()]
            check(not missing, f"{p.name}: every field commented" + (f" (missing: {missing})" if missing else ""))
            try:
                names, members = idl_roundtrip("nestdnn_msgs", p.resolve(), Path(tmp))
                check(names == [p.stem] and members == [f.name for f in m.fields],
                      f"{p.name}: msg -> idl -> rosidl_parser")
            except Exception as e:
                check(False, f"{p.name}: msg -> idl -> rosidl_parser: {e!r}")
    if len(argv) > 1:
        defs = json.loads(Path(argv[1]).read_text())
        for type_name, text in defs.items():
            sections = text.split(SEP + "\n")
            pkg, _, name = type_name.split("/")
            for i, sec in enumerate(sections):
                if i > 0:
                    head, _, sec = sec.partition("\n")
                    if not head.startswith("MSG: "):
                        check(False, f"rust {type_name}: section {i} lacks 'MSG: ' line")
                        continue
                    pkg, name = head[5:].strip().split("/")
                try:
                    m = parse_message_string(pkg, name, sec)
                except Exception as e:
                    check(False, f"rust {type_name}: section {pkg}/{name}: {e}")
                    continue
                if i == 0 and pkg == "nestdnn_msgs":
                    ref = parsed.get(name)
                    check(ref is not None and field_sig(m) == field_sig(ref)
                          and const_sig(m) == const_sig(ref),
                          f"rust {type_name}: fields equal msg/{name}.msg"
                          + ("" if ref is None else f" {field_sig(m)} vs {field_sig(ref)}"
                             if field_sig(m) != field_sig(ref) else ""))
            check(True, f"rust {type_name}: {len(sections)} sections parse with rosidl_adapter")
        ours = {t.split("/")[-1] for t in defs if t.startswith("nestdnn_msgs/")}
        check(ours == set(parsed), f"every .msg has a Rust type and back: {sorted(ours)} vs {sorted(parsed)}")
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
