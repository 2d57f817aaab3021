"""The interactive menu: register / verify / identify / list / delete / reenroll / quit, read with ``input()`` so
it works in any terminal, over ssh and in tests; EOF quits."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import EXIT_OK, FaceIDError, debug_enabled, describe_unexpected
from . import render
from .actions import run_action
from .gallery_access import clean_name
from .outcome import Outcome
from .session import Session

MENU = [
    ("1", "register"),
    ("2", "verify"),
    ("3", "identify"),
    ("4", "list"),
    ("5", "delete"),
    ("6", "reenroll"),
    ("q", "quit"),
]


def ask(prompt: str) -> str:
    """One line from stdin; EOF ends the menu (raised as EOFError, caught by `menu`). When stdin is not a
    terminal the answer is echoed, so a piped session's transcript reads like a typed one."""
    answer = input(prompt).strip()
    if not sys.stdin.isatty():
        print(answer)
    return answer


def menu(session: Session) -> int:
    """The interactive loop. Errors in an action are printed and the menu continues; EOF or 'q' quits (0)."""
    print(
        f"Face ID - gallery {session.args.data_dir}, source {session.args.source}"
        f"{' (preview window: c = capture, v = verify, q = cancel)' if session.preview.enabled else ''}"
    )
    choices = {}
    for key, name in MENU:
        choices[key] = choices[name] = choices[name[0]] = name
    choices["r"], choices["d"] = "register", "delete"
    while True:
        print("\n" + "   ".join(f"{k}) {a}" for k, a in MENU))
        try:
            choice = ask("choice> ").lower()
        except EOFError:
            print("\nbye")
            return EXIT_OK
        action = choices.get(choice)
        if action is None:
            if choice:
                print(f"Unknown choice {choice!r}; type a number or a name from the list.")
            continue
        if action == "quit":
            print("bye")
            return EXIT_OK
        try:
            outcome = _menu_action(session, action)
        except EOFError:
            print("\nbye")
            return EXIT_OK
        except FaceIDError as err:
            print(f"error: {err}")
            continue
        except KeyboardInterrupt:
            print("\n(cancelled)")
            continue
        except Exception as err:  # a bug in one action must not end the session: say so in one sentence
            if debug_enabled():
                import traceback

                traceback.print_exc()
            print(f"error: {describe_unexpected(err)}")
            continue
        finally:
            session.close()
        if outcome is not None:
            print("\n".join(outcome.lines))


def _menu_action(session: Session, action: str) -> Outcome | None:
    """Ask for what the action needs, then run it."""
    ns = argparse.Namespace(name=None, replace=False, pickle=None)
    if action in ("register", "verify", "delete"):
        ns.name = clean_name(ask("name> "), new=action == "register")
    if action in ("register", "delete"):
        with session.gallery() as g:
            exists = g.get(ns.name) is not None
        if action == "delete" and not exists:
            raise FaceIDError(f"No one named {ns.name!r} is registered (see the list action).")
        if action == "register" and exists:
            if ask(f"{ns.name!r} is already registered. Replace? [y/N] ").lower() not in ("y", "yes"):
                print("Kept the existing registration.")
                return None
            ns.replace = True
    if action == "delete" and ask(f"Delete {ns.name!r} and their samples? [y/N] ").lower() not in ("y", "yes"):
        print("Nothing deleted.")
        return None
    return render.outcome(run_action(session, action, ns))
