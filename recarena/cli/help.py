"""The ``--help`` layout every recarena command shares."""

from __future__ import annotations

import argparse
import copy


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the description and epilog, and ends each option's help with its
    default, ``(default: 10)``, unless the help already says what the default is, or there is none to
    show (None, a flag's False, an empty list). An option without help still shows its default."""

    @staticmethod
    def shown_default(action: argparse.Action) -> str | None:
        """The default as ``--help`` shows it, or None where there is nothing to show."""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
        ):
            return None
        if isinstance(default, (list, tuple)):
            return ",".join(str(value) for value in default)
        return str(default)

    def _format_action(self, action: argparse.Action) -> str:
        if not (action.help or "").strip() and action.help is not argparse.SUPPRESS:
            shown = self.shown_default(action)
            if shown is not None:
                action = copy.copy(action)
                action.help = f"(default: {shown.replace('%', '%%')})"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = self.shown_default(action)
        if shown is None or "default" in text:
            return text
        return f"{text} (default: {shown.replace('%', '%%')})"
