"""Text for items and users, built from metadata and logs by documented templates.

Item template
-------------
A template is a ``str.format`` string over the fields ``title``, ``year``, ``genres`` (joined with
", ") and ``text``. It is cut into segments, one per placeholder, each segment being the literal
text *before* its placeholder plus the placeholder. A segment whose field is unknown (empty title,
year 0, no genres, empty text) is dropped whole, and leading separators left at the start are
stripped, so unknown parts vanish cleanly::

    DEFAULT_ITEM_TEMPLATE = "Title: {title}. Year: {year}. Genres: {genres}. {text}"
    -> "Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy"   (no text)
    -> "Year: 1995. Genres: Drama"                                             (no title)

Text after the last placeholder is always kept.

User profile
------------
:func:`user_profile_texts` describes each user by the titles of their most recent liked items
(rating >= ``LIKE_THRESHOLD``; every event counts as liked in logs without ratings), newest last,
and their most frequent genres among those items. Build profiles from the *training* log only, or
the profile leaks held-out items.
"""

from __future__ import annotations

import string
from collections import Counter

from recarena.core.errors import ConfigError
from recarena.data.interactions import InteractionLog, ItemMetadata

DEFAULT_ITEM_TEMPLATE = "Title: {title}. Year: {year}. Genres: {genres}. {text}"
ITEM_FIELDS = ("title", "year", "genres", "text")
_LEADING_SEPARATORS = " .,;:|-\t\n"


def _segments(template: str) -> tuple[list[tuple[str, str]], str]:
    """Split ``template`` into (literal_before, field) segments and the trailing literal."""
    segments: list[tuple[str, str]] = []
    pending = ""
    for literal, field, spec, conversion in string.Formatter().parse(template):
        pending += literal
        if field is None:
            continue
        if field not in ITEM_FIELDS:
            raise ConfigError(
                f"item template field '{{{field}}}' is unknown; valid fields are {list(ITEM_FIELDS)}"
            )
        if spec or conversion:
            raise ConfigError(f"item template field '{{{field}}}' must not have a format spec or conversion")
        segments.append((pending, field))
        pending = ""
    return segments, pending


def format_item(
    template: str, title: str = "", year: int = 0, genres: tuple[str, ...] = (), text: str = ""
) -> str:
    """One item's text by ``template`` (see the module docstring for how unknown parts are dropped)."""
    segments, trailing = _segments(template)
    values = {
        "title": title.strip(),
        "year": str(int(year)) if year and int(year) > 0 else "",
        "genres": ", ".join(g for g in genres if g),
        "text": text.strip(),
    }
    parts = [literal + values[field] for literal, field in segments if values[field]]
    return ("".join(parts) + trailing).lstrip(_LEADING_SEPARATORS).strip()


def item_texts(items: ItemMetadata, template: str = DEFAULT_ITEM_TEMPLATE) -> list[str]:
    """Text of every item (in item-index order) built from its metadata by ``template``."""
    _segments(template)  # validate once, even for an empty catalogue
    return [
        format_item(template, items.title[i], int(items.year[i]), items.genres[i], items.text[i])
        for i in range(len(items))
    ]


def _short_title(items: ItemMetadata, item: int) -> str:
    title = items.title[item].strip() or f"item {item}"
    year = int(items.year[item])
    return f"{title} ({year})" if year > 0 else title


def user_profile_texts(log: InteractionLog, max_items: int = 20, max_genres: int = 3) -> list[str]:
    """A text profile of every user's history (user-index order), for the user side of text models.

    Example: ``"Liked: Heat (1995), Toy Story (1995). Favourite genres: Action, Comedy."``. Users
    with no liked item get ``"No liked items yet."``. Genre ties break alphabetically.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if max_genres < 0:
        raise ValueError(f"max_genres must be >= 0, got {max_genres}")
    liked = log.liked
    profiles = []
    for user in range(log.n_users):
        span = log.user_slice(user)
        user_items = log.item[span][liked[span]][-max_items:]
        if len(user_items) == 0:
            profiles.append("No liked items yet.")
            continue
        text = "Liked: " + ", ".join(_short_title(log.items, int(i)) for i in user_items) + "."
        counts = Counter(g for i in user_items for g in log.items.genres[int(i)] if g)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_genres]
        if top:
            text += " Favourite genres: " + ", ".join(g for g, _ in top) + "."
        profiles.append(text)
    return profiles


__all__ = ["DEFAULT_ITEM_TEMPLATE", "ITEM_FIELDS", "format_item", "item_texts", "user_profile_texts"]
