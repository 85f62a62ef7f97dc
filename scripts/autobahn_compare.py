"""Compares two Autobahn|Testsuite fuzzingclient reports (scripts/autobahn.sh).

Reads the `index.json` of the direct run and of the run through Portico, prints the number
of cases per verdict (`behavior` and `behaviorClose`) for both, lists every case whose
verdicts differ, writes the same summary as Markdown, and exits 1 if any case differs.

Runs on Python 2.7 (the interpreter of the autobahntestsuite virtualenv) and on Python 3.
"""

from __future__ import print_function, unicode_literals

import argparse
import io
import json
import os
import re
import sys
import time

BEGIN = "<!-- autobahn-results:begin -->"
END = "<!-- autobahn-results:end -->"
# Autobahn's verdicts, most to least favourable; anything else is listed after them.
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "WRONG CODE", "UNCLEAN", "FAILED"]


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def load(path):
    """{case id: per-case entry} of the only agent in `path`, and the agent name."""
    with io.open(path, encoding="utf-8") as f:
        index = json.load(f)
    if len(index) != 1:
        sys.exit("%s: expected one agent, found %s" % (path, sorted(index)))
    (agent, cases), = index.items()
    return agent, cases


def description(report_dir, entry):
    """The case's one-line description from its own report file, if readable."""
    try:
        with io.open(os.path.join(report_dir, entry["reportfile"]), encoding="utf-8") as f:
            text = json.load(f).get("description", "")
    except (IOError, OSError, ValueError, KeyError):
        return ""
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text


def code(value):
    """A close code as shown: `none` when the connection was dropped without a close frame."""
    return "none" if value is None else str(value)


def counts(cases, field):
    out = {}
    for entry in cases.values():
        out[entry.get(field, "?")] = out.get(entry.get(field, "?"), 0) + 1
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direct", required=True, help="index.json of the direct run")
    parser.add_argument("--portico", required=True, help="index.json of the run through Portico")
    parser.add_argument("--summary", help="write the Markdown summary here")
    parser.add_argument("--doc", help="replace the results block of this Markdown file")
    parser.add_argument("--versions", default="", help="tool versions, for the summary")
    parser.add_argument("--cases", default="*", help="the case selection, for the summary")
    parser.add_argument("--exclude", default="", help="the excluded cases, for the summary")
    parser.add_argument("--durations", nargs=2, type=int, metavar=("DIRECT", "PORTICO"),
                        help="seconds each run took, for the summary")
    args = parser.parse_args()

    _, direct = load(args.direct)
    _, portico = load(args.portico)
    direct_dir = os.path.dirname(args.direct)
    portico_dir = os.path.dirname(args.portico)

    fields = ("behavior", "behaviorClose")
    verdicts = set()
    tallies = {}
    for name, cases in (("direct", direct), ("portico", portico)):
        for field in fields:
            tallies[name, field] = counts(cases, field)
            verdicts.update(tallies[name, field])
    verdicts = [v for v in ORDER if v in verdicts] + sorted(verdicts - set(ORDER))

    universe = sorted(set(direct) | set(portico), key=case_key)
    differing = []
    for case_id in sorted(set(direct) | set(portico), key=case_key):
        a = direct.get(case_id)
        b = portico.get(case_id)
        if a is None or b is None or any(a.get(f) != b.get(f) for f in fields):
            differing.append(case_id)

    lines = []
    add = lines.append
    add("Run of %s (UTC) by `scripts/autobahn.sh`." % time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
    add("")
    if args.versions:
        add("- Versions: %s." % args.versions)
    selection = "`%s`" % args.cases
    if args.exclude:
        selection += ", excluding `%s`" % args.exclude
    add("- Cases: %s: %d direct, %d through Portico." % (selection, len(direct), len(portico)))
    if args.durations:
        add("- Time: %d s direct, %d s through Portico (2-core machine)." % tuple(args.durations))
    add("")
    add("| verdict | behavior direct | behavior Portico | behaviorClose direct | behaviorClose Portico |")
    add("| --- | ---: | ---: | ---: | ---: |")
    for verdict in verdicts:
        add("| %s | %s |" % (verdict, " | ".join(
            str(tallies[name, field].get(verdict, 0))
            for field in fields for name in ("direct", "portico"))))
    add("")

    # The non-OK verdicts, by case, so a reader sees which cases they are.
    not_ok = [c for c in sorted(set(direct) & set(portico), key=case_key)
              if c not in differing and any(direct[c].get(f) != "OK" for f in fields)]
    if differing:
        add("**%d %s differ** (direct -> through Portico):" % (
            len(differing), "case" if len(differing) == 1 else "cases"))
        add("")
        add("| case | behavior | behaviorClose | close code (direct -> Portico) | description |")
        add("| --- | --- | --- | --- | --- |")
        for case_id in differing:
            a = direct.get(case_id, {})
            b = portico.get(case_id, {})
            add("| %s | %s -> %s | %s -> %s | %s -> %s | %s |" % (
                case_id, a.get("behavior", "missing"), b.get("behavior", "missing"),
                a.get("behaviorClose", "missing"), b.get("behaviorClose", "missing"),
                code(a.get("remoteCloseCode")), code(b.get("remoteCloseCode")),
                description(direct_dir, a) if a else description(portico_dir, b)))
    else:
        add("**All verdicts match.**")
    add("")
    if not_ok:
        groups = {}
        for case_id in not_ok:
            key = (direct[case_id].get("behavior"), direct[case_id].get("behaviorClose"))
            groups.setdefault(key, []).append(case_id)
        add("Cases not OK, with the same verdicts on both runs (behavior / behaviorClose):")
        add("")
        for (behavior, close), ids in sorted(groups.items()):
            add("- %s / %s: %s" % (behavior, close, compress(ids, universe)))
        add("")
    # Close codes are not verdicts (Autobahn accepts a dropped TCP connection as well as a
    # close frame when failing a connection), but where they differ is worth seeing.
    codes = {}
    for case_id in sorted(set(direct) & set(portico), key=case_key):
        a = direct[case_id].get("remoteCloseCode")
        b = portico[case_id].get("remoteCloseCode")
        if a != b:
            codes.setdefault((a, b), []).append(case_id)
    if codes:
        add("Close code received by Autobahn, where it differs (informational; `none` = the "
            "connection was dropped without a close frame):")
        add("")
        for (a, b), ids in sorted(codes.items(), key=lambda item: str(item[0])):
            add("- %s -> %s: %d cases: %s" % (
                code(a), code(b), len(ids),
                compress(ids, universe)))
        add("")
    summary = "\n".join(lines)

    print()
    print(summary)
    if args.summary:
        with io.open(args.summary, "w", encoding="utf-8") as f:
            f.write(summary + "\n")
    if args.doc:
        write_doc(args.doc, summary)
    return 1 if differing else 0


def compress(ids, universe):
    """The case ids, shortened: `12.*` for a whole section (of `universe`, every case of the
    run), `6.4.*` for a whole subsection, `3.1 ... 3.7` for a run of consecutive cases."""
    chosen = set(ids)
    out = []
    done = set()

    def whole(prefix):
        members = [c for c in universe if c.startswith(prefix + ".")]
        return len(members) > 1 and all(c in chosen for c in members), members

    for case_id in ids:
        if case_id in done:
            continue
        parts = case_id.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            complete, members = whole(prefix)
            if complete:
                out.append("%s.* (%d)" % (prefix, len(members)))
                done.update(members)
                break
        else:
            out.append(case_id)
            done.add(case_id)
    # Runs of consecutive single cases of one subsection: `5.9 ... 5.18`.
    merged = []
    for item in out:
        prev = merged[-1] if merged else None
        if (prev and "*" not in item and "*" not in prev[-1]
                and case_key(item)[:-1] == case_key(prev[-1])[:-1]
                and case_key(item)[-1] == case_key(prev[-1])[-1] + 1):
            prev.append(item)
        else:
            merged.append([item])
    text = []
    for run in merged:
        if len(run) > 3:
            text.append("%s ... %s" % (run[0], run[-1]))
        else:
            text.extend(run)
    return ", ".join(text)


def write_doc(path, summary):
    with io.open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < start:
        sys.exit("%s has no %s ... %s block to replace" % (path, BEGIN, END))
    text = text[:start + len(BEGIN)] + "\n" + summary + "\n" + text[end:]
    with io.open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote the results into %s" % path)


if __name__ == "__main__":
    sys.exit(main())
