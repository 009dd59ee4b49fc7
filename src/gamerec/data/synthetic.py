"""The embedded default data set: a synthetic Amazon 2018 Video Games dump with learnable structure.

`generate` writes `Video_Games_5.json.gz` (reviews) and `meta_Video_Games.json.gz` (metadata)
in the exact raw Amazon 2018 formats (gzip, one JSON object per line, keys in the real order),
so one reader serves real and synthetic files alike.

The hidden world behind the files (`simulate` returns it, for tests and for curious readers):

- items have a latent genre and platform; popularity is Zipf-like with a floor, so that most
  items of this "5-core" file get at least five reviews;
- brands have a home genre (most items of a genre come from its brands) and a price tier;
- titles and descriptions use genre vocabularies plus shared noise words;
- users like 1-3 genres and own 1-2 platforms; their draws follow those, then popularity;
- also_view lists are popular items of the same genre, often of the same platform, for a
  `also_view_taste` share of their entries, and any item for the rest: with the default, a
  user buys later about as many of their items' also_view entries as on the real Video
  Games data (bench/also_view_rate.py measures both);
- the quirks of real dumps: duplicated metadata lines, reviewed items without metadata,
  also_view ids outside the catalogue, prices that are "", ranges or HTML/CSS junk.

Everything random comes from one `np.random.default_rng(params.seed)` consumed in a fixed order,
and the gzip headers carry no name or time, so a seed gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from gamerec.config import SyntheticParams

REVIEWS_FILE = "Video_Games_5.json.gz"
META_FILE = "meta_Video_Games.json.gz"

# Knobs that SyntheticParams does not expose: fixed shapes of the world, named so they read.
MIN_DRAWS = 6  # draws per user before dedupe, so that nearly every user keeps >= 5 reviews
MIN_ITEM_REVIEWS = 8.0  # popularity floor: expected reviews of the least popular item
ACTIVITY_SIGMA = 1.0  # lognormal spread of user activity beyond the minimum (heavy tail)
MAX_USER_SHARE = 0.5  # nobody reviews more than this share of the catalogue
TOPUP_ROUNDS = 5  # rounds of extra draws that replace pairs lost to dedupe
BRAND_HOME_SHARE = 0.8  # share of a genre's items made by brands whose home it is
TIER_MEDIAN = (9.99, 24.99, 49.99)  # budget, standard, premium: lognormal price medians
COLLECTOR_SHARE, RANGE_SHARE, JUNK_SHARE = 0.01, 0.02, 0.01  # of the priced items
ALSO_VIEW_MIX = (0.6, 0.3, 0.1)  # same (genre, platform), same genre, anywhere
ALSO_BUY_MIX = (0.3, 0.4, 0.3)  # complements: looser than also_view
ANGRY_SHARE = 0.04  # one-star reviews whatever the game
REVIEW_TEXT_POOL = 24  # distinct review texts per (genre, rating); texts are drawn from it
VOTE_CAP = 9_999  # helpful votes beyond this are clipped (real maxima are a few thousand)
GZIP_LEVEL = 3  # speed over size: the file is rebuilt, never shipped
CHUNK = 100_000  # records serialised per write, bounds memory for millions of reviews

GENRE_VOCAB: dict[str, list[str]] = {
    "Racing": "car track drift speed lap turbo race circuit engine tires nitro rally garage podium".split(),
    "Shooter": "gun weapon sniper squad ammo campaign multiplayer headshot rifle mission soldier grenade".split(),
    "RPG": "quest dungeon magic sword party loot dragon spell class kingdom inventory boss lore".split(),
    "Sports": "football soccer basketball team season league player stadium coach draft roster goal".split(),
    "Puzzle": "puzzle block tile match brain logic riddle pieces grid colors solve pattern".split(),
    "Platformer": "jump platform coins hero run stage secret enemies powerups castle dash checkpoint".split(),
    "Strategy": "army empire city resources tactics units turn conquer diplomacy base civilization war".split(),
    "Fighting": "combo fighter punch kick arcade special moves versus ring knockout arena stick".split(),
    "Adventure": "explore island treasure mystery cave journey ruins discover ancient relic clues map".split(),
    "Simulation": "farm build life crops animals town manage career truck village design house".split(),
    "Horror": "zombies scary dark monster fear haunted blood ghost creepy scares asylum undead".split(),
    "Music": "guitar drums song rhythm band beat dance notes microphone karaoke tempo concert".split(),
    "Stealth": "stealth assassin shadow sneak guards infiltrate silent spy disguise gadgets alarm target".split(),
    "Survival": "craft hunger wilderness shelter gather wolves tools storm camp water scavenge raft".split(),
    "Party": "friends minigames family board dice laughs couch trivia bowling controllers teams prizes".split(),
    "Flight": "plane pilot cockpit jet airport runway dogfight altitude landing aircraft squadron radar".split(),
}
COMMON_WORDS = (
    "game play fun great graphics controls story price hours level time really good new online "
    "worth experience mode players edition content features amazing best easy hard"
).split()
PLATFORMS = {  # name: market share, so platform-popular items exist as in the real catalogue
    "PlayStation 4": 0.28, "Xbox One": 0.2, "Nintendo Switch": 0.17, "PC": 0.15,
    "PlayStation 3": 0.08, "Xbox 360": 0.06, "Nintendo 3DS": 0.03, "Wii U": 0.02, "Mac": 0.01,
}
BRAND_PARTS = (
    "Nova Iron Pixel Crimson Star Atlas Vortex Silver Echo Titan Lunar Rogue Zen Apex Cobalt "
    "Maple Quantum Ember Polar Bright".split(),
    "Games Studios Interactive Entertainment Software Works Digital Arts".split(),
)
TITLE_NOUNS = ("Legends Chronicles Rivals World Saga Heroes Origins Evolution Quest Arena Deluxe "
               "Ultimate").split()
FIRST_NAMES = (
    "John Mike Chris Sarah Jessica David Anna Kevin Laura Brian Emily Jason Ashley Matt Nicole "
    "Ryan Megan Tyler Rachel Eric Amanda Justin Maria Josh Kim Steve Lisa Dan Amy Jos\u00e9 Zo\u00eb"
).split()
GAMER_TAGS = "Gamer Ninja Wolf Dragon Pixel Shadow Knight Ace Sniper Player Dad Mom".split()
PRICE_JUNK = (
    '<span class="a-size-mini">',
    ".a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color:#fffbf3;"
    "border-color:#e77600;box-shadow:0 0 3px rgba(228,121,17,.5)}",
    "\n\t\t                                            \n\r\n\r\n  ",
)
SENTENCES = {  # review sentences by sentiment; {a} and {b} are genre words
    "pos": ["Love the {a} and the {b}.", "Best {a} game I have played in years.",
            "The {a} feels great and the {b} is amazing.", "My son plays the {a} mode every day.",
            "Hours of fun with the {a}.", "Great {b}, great {a}, great price."],
    "mid": ["The {a} is ok but the {b} gets repetitive.", "Decent {a}, nothing special.",
            "Some {b} parts are fun, the {a} is average.", "Good for the price if you like {a}."],
    "neg": ["The {a} is broken and the {b} feels cheap.", "Returned it, the {a} was boring.",
            "Do not buy, the {b} never works.", "Waste of money, the {a} is terrible."],
}
SUMMARIES = {
    5: ["Five Stars", "Great game!", "Awesome", "Love it", "Must buy", "Best game ever"],
    4: ["Four Stars", "Good fun", "Pretty good", "Solid game", "Worth it"],
    3: ["Three Stars", "It's ok", "Average", "Meh", "Not bad"],
    2: ["Two Stars", "Disappointed", "Could be better", "Not worth it"],
    1: ["One Star", "Waste of money", "Terrible", "Do not buy", "Broken"],
}
IMG_HOST = "https://images-na.ssl-images-amazon.com/images/I/"
ALNUM = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)


def _names(base: list[str], n: int) -> list[str]:
    """n readable names: `base` in order, then again with " 2", " 3", ... when more are asked."""
    return [base[i % len(base)] + (f" {i // len(base) + 1}" if i >= len(base) else "") for i in range(n)]


def _random_ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> np.ndarray:
    """n distinct ids: `prefix` + `length` random uppercase alphanumerics (Amazon style)."""
    width = len(prefix) + length
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    todo = np.arange(n)
    while todo.size:  # redraw collisions until all are distinct (rarely more than one pass)
        buf[todo, len(prefix):] = ALNUM[rng.integers(0, 36, size=(todo.size, length))]
        ids = buf.view(f"S{width}").ravel()
        _, first = np.unique(ids, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)
    return buf.view(f"S{width}").ravel().astype(f"U{width}")


def _exact_mask(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Mark round(share * n) of n positions, at least one when share > 0, so tiny sets show quirks."""
    k = min(n, max(1, round(share * n))) if share > 0 and n > 0 else 0
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask


def _categorical(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """n draws of indices with probability proportional to `weights`."""
    cum = np.cumsum(weights, dtype=np.float64)
    return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cum) - 1)


@dataclass(frozen=True)
class Catalogue:
    """Latent and visible attributes of the items, one array entry per item."""

    asin: np.ndarray  # str
    genre: np.ndarray
    platform: np.ndarray
    brand: np.ndarray
    popularity: np.ndarray  # sums to 1
    price: np.ndarray  # dollars, before formatting
    brand_home: np.ndarray  # home genre per brand
    foreign: np.ndarray  # asins of items outside the catalogue (for also_view/also_buy)


def _catalogue(p: SyntheticParams, rng: np.random.Generator) -> Catalogue:
    """Items with genre, platform, brand, Zipf-like popularity and tier-dependent price."""
    n, g, b = p.items, p.genres, p.brands
    ids = _random_ids(rng, n + max(4, n // 2), "B0", 8)  # one pass keeps foreign ids disjoint
    genre_w = rng.dirichlet(np.full(g, 4.0))  # genres differ in size, none vanishes
    head = min(g, n)  # every genre gets an item when there are enough items
    genre = rng.permutation(np.concatenate([np.arange(head), _categorical(rng, genre_w, n - head)]))
    shares = np.array([PLATFORMS[k] for k in PLATFORMS])
    plat_w = np.resize(shares, p.platforms)
    platform = _categorical(rng, plat_w, n)
    # Brands: each has a home genre; most items of a genre come from the brands at home there.
    brand_home = rng.permutation(b) % g
    by_home = np.argsort(brand_home, kind="stable")
    lo = np.searchsorted(brand_home[by_home], np.arange(g))
    cnt = np.bincount(brand_home, minlength=g)
    home = (rng.random(n) < BRAND_HOME_SHARE) & (cnt[genre] > 0)
    pick = lo[genre] + (rng.random(n) * np.maximum(cnt[genre], 1)).astype(np.int64)
    brand = np.where(home, by_home[np.minimum(pick, b - 1)], rng.integers(0, b, n))
    # Zipf over a random rank order, times a brand reputation, plus a floor (see MIN_ITEM_REVIEWS).
    rank = rng.permutation(n) + 1.0
    pop = rank ** -p.popularity_exponent * rng.lognormal(0.0, 0.5, b)[brand]
    pop /= pop.sum()
    floor = min(MIN_ITEM_REVIEWS / p.interactions, 0.5 / n)
    pop = (1.0 - n * floor) * pop + floor
    tier = rng.choice(3, size=b, p=[0.3, 0.5, 0.2])[brand]
    price = np.asarray(TIER_MEDIAN)[tier] * rng.lognormal(0.0, 0.35, n)
    return Catalogue(ids[:n], genre, platform, brand, pop, price, brand_home, ids[n:])


@dataclass(frozen=True)
class _Picker:
    """Draws items by popularity within a (genre, platform) bucket, a genre, or the catalogue.

    Items are sorted by bucket = genre * platforms + platform, so a bucket and a genre are both
    contiguous ranges of one cumulative popularity array: one searchsorted serves them all.
    """

    order: np.ndarray
    cum: np.ndarray
    bounds: np.ndarray  # start of each bucket in `order`, plus the end
    platforms: int

    @classmethod
    def build(cls, cat: Catalogue, genres: int, platforms: int) -> _Picker:
        bucket = cat.genre * platforms + cat.platform
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(genres * platforms + 1))
        return cls(order, np.cumsum(cat.popularity[order]), bounds, platforms)

    def _in_range(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        base = np.where(lo > 0, self.cum[lo - 1], 0.0)
        target = base + rng.random(lo.size) * (self.cum[hi - 1] - base)
        pos = np.searchsorted(self.cum, target, side="right")
        return self.order[np.clip(pos, lo, hi - 1)]

    def pick(self, rng: np.random.Generator, genre: np.ndarray, platform: np.ndarray) -> np.ndarray:
        """Items of `genre` on `platform`; of `genre` on any platform where platform < 0 or empty."""
        b = genre * self.platforms + np.maximum(platform, 0)
        lo, hi = self.bounds[b], self.bounds[b + 1]
        whole = (platform < 0) | (lo == hi)
        lo = np.where(whole, self.bounds[genre * self.platforms], lo)
        hi = np.where(whole, self.bounds[(genre + 1) * self.platforms], hi)
        return self._in_range(rng, lo, hi)

    def anywhere(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n items by popularity over the whole catalogue."""
        return self._in_range(rng, np.zeros(n, np.int64), np.full(n, self.order.size))


@dataclass(frozen=True)
class Users:
    """Latent tastes and activity of the users."""

    reviewer_id: np.ndarray  # str
    genres: np.ndarray  # (users, 3); slots past a user's count repeat the first genre
    n_genres: np.ndarray
    platforms: np.ndarray  # (users, 2), same convention
    n_platforms: np.ndarray
    activity: np.ndarray  # relative draw weight, heavy-tailed
    window_start: np.ndarray  # first active day (days since 1970-01-01)
    window_len: np.ndarray  # days


def _users(p: SyntheticParams, rng: np.random.Generator, cat: Catalogue, day0: int, span: int) -> Users:
    """Users with 1-3 favourite genres, 1-2 platforms, an activity weight and an active window."""
    u = p.users
    genre_mass = np.bincount(cat.genre, cat.popularity, minlength=p.genres)  # fans follow hits
    plat_mass = np.bincount(cat.platform, cat.popularity, minlength=p.platforms)
    genres = _categorical(rng, genre_mass, u * 3).reshape(u, 3)
    n_genres = rng.choice([1, 2, 3], size=u, p=[0.35, 0.4, 0.25])
    genres = np.where(np.arange(3) < n_genres[:, None], genres, genres[:, :1])
    platforms = _categorical(rng, plat_mass, u * 2).reshape(u, 2)
    n_platforms = rng.choice([1, 2], size=u, p=[0.6, 0.4])
    platforms = np.where(np.arange(2) < n_platforms[:, None], platforms, platforms[:, :1])
    length = np.clip(rng.lognormal(np.log(700.0), 0.8, u), 30, span).astype(np.int64)
    start = day0 + (rng.random(u) * (span - length + 1)).astype(np.int64)
    return Users(
        _random_ids(rng, u, "A", 13), genres, n_genres, platforms, n_platforms,
        rng.lognormal(0.0, ACTIVITY_SIGMA, u), start, length,
    )


def _draw(p: SyntheticParams, rng: np.random.Generator, users: Users, picker: _Picker,
          genre_mass: np.ndarray, plat_mass: np.ndarray, who: np.ndarray, focus: float = 1.0) -> np.ndarray:
    """One item per entry of `who` (user indices): genre, then platform, then popularity.

    `focus` < 1 loosens the user's tastes: top-up rounds use it so that a user who already owns
    every hit of a small (genre, platform) bucket looks elsewhere instead of drawing duplicates.
    """
    n = who.size
    own_g = users.genres[who, (rng.random(n) * users.n_genres[who]).astype(np.int64)]
    genre = np.where(rng.random(n) < p.genre_focus * focus, own_g, _categorical(rng, genre_mass, n))
    own_p = users.platforms[who, (rng.random(n) * users.n_platforms[who]).astype(np.int64)]
    plat = np.where(rng.random(n) < p.platform_focus * focus, own_p, _categorical(rng, plat_mass, n))
    return picker.pick(rng, genre, plat)


def _interactions(p: SyntheticParams, rng: np.random.Generator, cat: Catalogue, users: Users,
                  picker: _Picker) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) pairs, about p.interactions of them, every user with >= MIN_DRAWS draws
    where the budget allows. Vectorised over draws; only the few top-up rounds loop."""
    genre_mass = np.bincount(cat.genre, cat.popularity, minlength=p.genres)
    plat_mass = np.bincount(cat.platform, cat.popularity, minlength=p.platforms)
    floor = int(np.clip(p.interactions // p.users, 1, MIN_DRAWS))
    cap = max(floor, int(MAX_USER_SHARE * p.items))
    budget = max(p.interactions - floor * p.users, 0)
    counts = floor + rng.poisson(users.activity * budget / users.activity.sum())
    who = np.repeat(np.arange(p.users), np.minimum(counts, cap))
    keys = np.unique(who * np.int64(p.items) + _draw(p, rng, users, picker, genre_mass, plat_mass, who))
    for r in range(1, TOPUP_ROUNDS + 1):  # dedupe loses pairs; draw more for active users to make up
        deficit = p.interactions - keys.size
        if deficit <= 0.005 * p.interactions:
            break
        who = _categorical(rng, users.activity, int(deficit * 1.2))
        focus = 1.0 - (r - 1) / TOPUP_ROUNDS  # full taste first, looser as buckets run dry
        new = who * np.int64(p.items) + _draw(p, rng, users, picker, genre_mass, plat_mass, who, focus)
        keys = np.union1d(keys, new)  # sorted by user, then item (a random order of items)
        first = np.searchsorted(keys, np.arange(p.users) * np.int64(p.items))
        keys = keys[np.arange(keys.size) - first[keys // p.items] < cap]  # keep the cap
    return keys // p.items, keys % p.items


@dataclass(frozen=True)
class World:
    """Everything `generate` writes, before formatting: the hidden state tests can check against."""

    catalogue: Catalogue
    users: Users
    user: np.ndarray  # review -> user index
    item: np.ndarray  # review -> item index
    day: np.ndarray  # review -> days since 1970-01-01 (midnight UTC)
    rating: np.ndarray  # 1..5
    in_genre: np.ndarray  # review item in one of the user's genres
    also_view: tuple[np.ndarray, np.ndarray]  # CSR (indptr, ids); id < 0 is foreign[-id - 1]
    also_buy: tuple[np.ndarray, np.ndarray]


def _related(rng: np.random.Generator, cat: Catalogue, picker: _Picker, size: float,
             empty: float, mix: tuple[float, float, float], foreign: float,
             taste: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per item a list of similar items (CSR): same bucket, same genre or anywhere, by popularity,
    without self or repeats; a `taste` share of entries follow this, the rest are any item,
    uniformly; a `foreign` share replaced by ids outside the catalogue."""
    n = cat.genre.size
    length = np.where(rng.random(n) < empty, 0, np.maximum(rng.poisson(size, n), 1))
    owner = np.repeat(np.arange(n), length)
    kind = _categorical(rng, np.asarray(mix), owner.size)
    plat = np.where(kind == 0, cat.platform[owner], -1)
    ids = picker.pick(rng, cat.genre[owner], plat)
    anywhere = kind == 2
    ids[anywhere] = picker.anywhere(rng, int(anywhere.sum()))
    if taste < 1.0:  # viewed together, not bought by the same people: the real lists mostly are
        blind = _exact_mask(rng, ids.size, 1.0 - taste)
        ids[blind] = rng.integers(0, n, int(blind.sum()))
    owner, ids = _first_unique(owner, ids, ids != owner)
    alien = _exact_mask(rng, ids.size, foreign)
    ids[alien] = -1 - rng.integers(0, cat.foreign.size, int(alien.sum()))
    owner, ids = _first_unique(owner, ids, np.ones(ids.size, dtype=bool))  # a foreign id once per list
    return np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]), ids


def _first_unique(owner: np.ndarray, ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeats of an id within an owner's list (and entries with keep False), keeping draw order."""
    _, first = np.unique(owner * np.int64(2**31) + ids, return_index=True)
    mask = np.zeros(owner.size, dtype=bool)
    mask[first] = True
    mask &= keep
    return owner[mask], ids[mask]


def _epoch_day(year: int, month: int = 1, day: int = 1) -> int:
    return (dt.date(year, month, day) - dt.date(1970, 1, 1)).days


def simulate(params: SyntheticParams, rng: np.random.Generator | None = None) -> World:
    """Draw the hidden world for `params` (a fresh rng from params.seed unless one is given)."""
    rng = np.random.default_rng(params.seed) if rng is None else rng
    day0 = _epoch_day(params.start_year)
    span = _epoch_day(params.end_year, 12, 31) - day0 + 1
    cat = _catalogue(params, rng)
    picker = _Picker.build(cat, params.genres, params.platforms)
    users = _users(params, rng, cat, day0, span)
    user, item = _interactions(params, rng, cat, users, picker)
    day = users.window_start[user] + (rng.random(user.size) * users.window_len[user]).astype(np.int64)
    in_genre = (users.genres[user] == cat.genre[item][:, None]).any(axis=1)
    quality = rng.normal(0.0, 0.5, params.items)  # some games are simply better
    taste = rng.normal(0.0, 0.4, params.users)  # some reviewers are simply harsher
    latent = np.where(in_genre, 4.6, 3.6) + quality[item] + taste[user] + rng.normal(0, 1.0, user.size)
    latent[rng.random(user.size) < ANGRY_SHARE] = 1.0  # broken discs, wrong region: real 1-star bump
    rating = np.clip(np.rint(latent), 1, 5).astype(np.int64)
    size, foreign = params.also_view_size, params.foreign_also_view
    also_view = _related(rng, cat, picker, size, 0.1, ALSO_VIEW_MIX, foreign, params.also_view_taste)
    also_buy = _related(rng, cat, picker, size / 2, 0.4, ALSO_BUY_MIX, foreign)
    return World(cat, users, user, item, day, rating, in_genre, also_view, also_buy)


@contextmanager
def _gzip_lines(path: Path) -> Iterator[IO[bytes]]:
    """A gzip stream without file name or time in its header, so equal content gives equal bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                 compresslevel=GZIP_LEVEL) as gz:
        yield gz


def _review_texts(rng: np.random.Generator, genres: list[str], pool: int) -> list[str]:
    """JSON-escaped review texts, `pool` per (genre, rating), at index (g * 5 + rating - 1) * pool + k."""
    out = []
    for name in genres:
        vocab = GENRE_VOCAB[name.split(" ")[0]]
        for rating in range(1, 6):
            mood = SENTENCES["neg" if rating <= 2 else "mid" if rating == 3 else "pos"]
            for _ in range(pool):
                sentences = []
                for i in rng.integers(0, len(mood), rng.integers(1, 4)).tolist():
                    a, b = rng.choice(len(vocab), 2, replace=False).tolist()
                    sentences.append(mood[i].format(a=vocab[a], b=vocab[b]))
                out.append(json.dumps(" ".join(sentences)))
    return out


def _person_names(rng: np.random.Generator, k: int) -> list[str]:
    """JSON-escaped reviewer names: real-looking names, gamer tags and the usual placeholders."""
    first = rng.integers(0, len(FIRST_NAMES), k)
    kind = rng.random(k)
    letters = ALNUM[10 + rng.integers(0, 26, k)].tobytes().decode()
    out = []
    for i in range(k):
        if kind[i] < 0.12:
            name = "Amazon Customer" if kind[i] < 0.1 else "Kindle Customer"
        elif kind[i] < 0.3:
            name = f"{GAMER_TAGS[first[i] % len(GAMER_TAGS)]}{first[i] * 7 % 100}"
        else:
            name = f"{FIRST_NAMES[first[i]]} {letters[i]}."
        out.append(json.dumps(name))
    return out


def _review_options(rng: np.random.Generator, platform_names: list[str]) -> dict[str, list[str]]:
    """Pre-serialised optional fragments of a review line; index 0 of each means "absent"."""
    image_sets = [_random_ids(rng, k, "", 11).tolist() for k in rng.integers(1, 4, 64).tolist()]
    return {
        "vote": [""] + [f'"vote": "{v:,}", ' for v in range(1, VOTE_CAP + 1)],
        "style": [""] + [f'"style": {json.dumps({"Platform:": " " + n})}, ' for n in platform_names]
        + ['"style": {"Format:": " Video Game"}, ', '"style": {"Edition:": " Standard"}, '],
        "image": [""] + [f'"image": {json.dumps([f"{IMG_HOST}{x}._SY88.jpg" for x in ids])}, '
                         for ids in image_sets],
    }


def _review_draws(rng: np.random.Generator, w: World, idx: np.ndarray, n_platforms: int,
                  n_images: int, day_frac: np.ndarray) -> dict[str, list[int]]:
    """Per-review codes of the optional keys and of `verified`, for the reviews `idx`."""
    n = idx.size
    vote = np.minimum(2 + (rng.pareto(1.1, n) * 2).astype(np.int64), VOTE_CAP)  # heavy tail: "1,024"
    vote[rng.random(n) >= 0.15] = 0
    s = rng.random(n)  # half the reviews name a style: mostly the platform, sometimes a format
    style = np.select([s < 0.3, s < 0.45, s < 0.5],
                      [1 + w.catalogue.platform[w.item[idx]], 1 + n_platforms, 2 + n_platforms], 0)
    image = np.where(rng.random(n) < 0.004, rng.integers(1, n_images, n), 0)
    verified = rng.random(n) < 0.5 + 0.45 * day_frac  # older reviews were less often verified
    return {"vote": vote.tolist(), "style": style.tolist(), "image": image.tolist(),
            "verified": verified.tolist()}


def _write_reviews(path: Path, p: SyntheticParams, rng: np.random.Generator, w: World,
                   genre_names: list[str], platform_names: list[str]) -> None:
    """Reviews grouped by item, newest first as in the real dump, serialised in chunks.

    Each line is assembled from pre-serialised JSON fragments, which is several times faster
    than json.dumps of a dict and gives the same bytes (default separators, ASCII escapes).
    """
    cat, pool = w.catalogue, REVIEW_TEXT_POOL
    texts = _review_texts(rng, genre_names, pool)
    summaries = [json.dumps(x) for r in range(1, 6) for x in SUMMARIES[r]]
    summ_lo = np.cumsum([0] + [len(SUMMARIES[r]) for r in range(1, 6)])
    names = _person_names(rng, max(50, p.users // 20))
    user_names = [names[k] for k in rng.integers(0, len(names), p.users).tolist()]
    opt = _review_options(rng, platform_names)
    day0 = _epoch_day(p.start_year)
    n_days = _epoch_day(p.end_year, 12, 31) - day0 + 1
    review_time = [f"{d.month:02d} {d.day}, {d.year}"
                   for d in (dt.date(p.start_year, 1, 1) + dt.timedelta(days=k) for k in range(n_days))]
    asins, rids = cat.asin.tolist(), w.users.reviewer_id.tolist()
    order = np.lexsort((-w.day, w.item))  # by item, newest first
    with _gzip_lines(path) as out:
        for lo in range(0, order.size, CHUNK):
            idx = order[lo:lo + CHUNK]
            rating, day = w.rating[idx], w.day[idx] - day0
            k = _review_draws(rng, w, idx, len(platform_names), len(opt["image"]), day / max(1, n_days - 1))
            text = (cat.genre[w.item[idx]] * 5 + rating - 1) * pool + rng.integers(0, pool, idx.size)
            width = summ_lo[rating] - summ_lo[rating - 1]
            summ = summ_lo[rating - 1] + (rng.random(idx.size) * width).astype(np.int64)
            lines = [
                f'{{{opt["image"][im]}"overall": {r}.0, {opt["vote"][v]}'
                f'"verified": {"true" if ve else "false"}, '
                f'"reviewTime": "{review_time[d]}", "reviewerID": "{rids[u]}", "asin": "{asins[i]}", '
                f'{opt["style"][st]}"reviewerName": {user_names[u]}, "reviewText": {texts[tx]}, '
                f'"summary": {summaries[sm]}, "unixReviewTime": {(d + day0) * 86400}}}\n'
                for u, i, r, d, v, st, im, ve, tx, sm in zip(
                    w.user[idx].tolist(), w.item[idx].tolist(), rating.tolist(), day.tolist(),
                    k["vote"], k["style"], k["image"], k["verified"], text.tolist(), summ.tolist())
            ]
            out.write("".join(lines).encode())


def _format_prices(rng: np.random.Generator, p: SyntheticParams, price: np.ndarray) -> list[str]:
    """Price strings as in real dumps: "" (missing), "$19.99", "$1,250.00", ranges, HTML junk."""
    n = price.size
    cents = np.floor(price) + 0.99
    out = [f"${x:,.2f}" for x in cents.tolist()]
    missing = _exact_mask(rng, n, p.missing_price)
    priced = rng.permutation(np.flatnonzero(~missing))
    # at least two of each quirk, so that a small file has them even if one item's metadata line is missing
    k = [min(priced.size, max(2, round(s * priced.size))) if priced.size else 0
         for s in (COLLECTOR_SHARE, RANGE_SHARE, JUNK_SHARE)]
    collector = priced[: k[0]]
    ranges = priced[k[0]: k[0] + k[1]]
    junk = priced[k[0] + k[1]: k[0] + k[1] + k[2]]
    for i in collector.tolist():  # collector editions: four digits, thousands separator
        out[i] = f"${1000 + 20 * cents[i]:,.2f}"
    for i, f in zip(ranges.tolist(), rng.uniform(1.5, 3.0, ranges.size).tolist()):
        out[i] = f"${cents[i]:,.2f} - ${np.floor(cents[i] * f) + 0.99:,.2f}"
    for i, j in zip(junk.tolist(), rng.integers(0, len(PRICE_JUNK), junk.size).tolist()):
        out[i] = PRICE_JUNK[j]
    for i in np.flatnonzero(missing).tolist():
        out[i] = ""
    return out


def _csr_lists(csr: tuple[np.ndarray, np.ndarray], cat: Catalogue) -> list[list[str]]:
    """CSR of item ids (negative = foreign) to per-item lists of asins."""
    indptr, ids = csr
    everything = np.concatenate([cat.asin, cat.foreign])
    flat = everything[np.where(ids >= 0, ids, cat.asin.size - 1 - ids)].tolist()
    bounds = indptr.tolist()
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _descriptions(rng: np.random.Generator, p: SyntheticParams, w: World, genre_names: list[str],
                  titles: list[str]) -> list[list[str]]:
    """1-2 paragraphs per item, half genre words and half shared noise; some wrapped in HTML."""
    cat, n, width = w.catalogue, p.items, 40
    vocabs = [GENRE_VOCAB[g.split(" ")[0]] for g in genre_names]
    words = [x for v in vocabs for x in v] + COMMON_WORDS
    size = np.array([len(v) for v in vocabs])
    off = np.concatenate([[0], np.cumsum(size)[:-1]])
    u = rng.random((n, width))
    own = off[cat.genre][:, None] + (u * size[cat.genre][:, None]).astype(np.int64)
    noise = size.sum() + (u * len(COMMON_WORDS)).astype(np.int64)
    idx = np.where(rng.random((n, width)) < 0.5, own, noise).tolist()
    length = rng.integers(12, width + 1, n).tolist()
    paragraphs = rng.integers(1, 3, n).tolist()
    html = _exact_mask(rng, n, p.html_description).tolist()
    out = []
    for i in range(n):
        chosen = [words[j] for j in idx[i][: length[i]]]
        cut = len(chosen) // paragraphs[i]  # split on a word boundary into one or two paragraphs
        paras = [" ".join(part).capitalize() + "." for part in (chosen[:cut], chosen[cut:]) if part]
        if html[i]:  # real descriptions often keep Amazon's markup
            paras = [f"<b>{titles[i]}</b><br>{paras[0]}<br>"] + [f"<p>{t}</p>" for t in paras[1:]]
        out.append(paras)
    return out


def _brand_names(k: int) -> list[str]:
    """k distinct readable brand names: "Nova Games", "Iron Studios", ..., numbered past 160."""
    first, second = BRAND_PARTS
    return [f"{first[b % len(first)]} {second[(b // len(first)) % len(second)]}"
            + (f" {b // (len(first) * len(second)) + 1}" if b >= len(first) * len(second) else "")
            for b in range(k)]


def _titles(rng: np.random.Generator, vocab: list[list[str]], platform: list[str]) -> list[str]:
    """Two distinct genre words, a title noun, maybe a sequel number, often the platform."""
    n = len(vocab)
    a, b = rng.random(n).tolist(), rng.random(n).tolist()
    noun = rng.integers(0, len(TITLE_NOUNS), n).tolist()
    sequel = rng.choice(["", "", "", " 2", " 3", " II"], n).tolist()
    with_platform = (rng.random(n) < 0.5).tolist()
    out = []
    for v, x, y, k, s, wp, pl in zip(vocab, a, b, noun, sequel, with_platform, platform):
        i = int(x * len(v))
        j = (i + 1 + int(y * (len(v) - 1))) % len(v)  # any word but the first one
        out.append(f"{v[i].title()} {v[j].title()} {TITLE_NOUNS[k]}{s}" + (f" - {pl}" if wp else ""))
    return out


def _ranks(rng: np.random.Generator, cat: Catalogue, platform: list[str]) -> list[list[str] | str]:
    """Sales ranks that follow popularity, as a list, a truncated string or empty, like real dumps."""
    n = cat.popularity.size
    position = np.empty(n, np.int64)
    position[np.argsort(-cat.popularity, kind="stable")] = np.arange(n)
    sales = ((position + 1) * 50 * rng.lognormal(0.0, 0.3, n)).astype(np.int64).tolist()
    kind = rng.choice(3, size=n, p=[0.7, 0.2, 0.1]).tolist()
    return [
        [f">#{r:,} in Video Games (See Top 100 in Video Games)",
         f">#{max(1, r // 8):,} in Video Games > {pl} > Games"] if k == 0
        else f"{r:,} in Video Games (" if k == 1 else []
        for r, k, pl in zip(sales, kind, platform)
    ]


def _meta_records(rng: np.random.Generator, p: SyntheticParams, w: World, genre_names: list[str],
                  platform_names: list[str]) -> list[str]:
    """One JSON line per catalogue item, keys in the order of the real 2018 metadata files."""
    cat, n = w.catalogue, p.items
    brand_names = _brand_names(p.brands)
    no_brand = (rng.random(n) < 0.02).tolist()  # real dumps have a few items without a brand
    brand = [("" if nb else brand_names[b]) for nb, b in zip(no_brand, cat.brand.tolist())]
    vocab = [GENRE_VOCAB[genre_names[g].split(" ")[0]] for g in cat.genre.tolist()]
    platform = [platform_names[k] for k in cat.platform.tolist()]
    titles = _titles(rng, vocab, platform)
    descriptions = _descriptions(rng, p, w, genre_names, titles)
    prices = _format_prices(rng, p, cat.price)
    also_view, also_buy = _csr_lists(w.also_view, cat), _csr_lists(w.also_buy, cat)
    ranks = _ranks(rng, cat, platform)
    n_feat = rng.integers(0, 5, n).tolist()
    n_img = rng.integers(1, 5, n)
    img_ids = _random_ids(rng, int(n_img.sum()), "", 11).tolist()
    img_lo = np.concatenate([[0], np.cumsum(n_img)]).tolist()
    weight = np.round(rng.uniform(1.0, 12.0, n), 1).tolist()
    asins = cat.asin.tolist()
    lines = []
    for i in range(n):
        v = vocab[i]
        other = 1 + i % (len(v) - 1)  # an offset that never lands on the same word
        feats = [f"{v[(i + j) % len(v)].title()} mode with new {v[(i + j + other) % len(v)]} content"
                 for j in range(n_feat[i])]
        imgs = img_ids[img_lo[i]: img_lo[i + 1]]
        details = {"Shipping Weight:": f"{weight[i]} ounces", "ASIN: ": asins[i]} if weight[i] > 2 else {}
        rec = {
            "category": ["Video Games", platform[i], "Games"], "tech1": "", "description": descriptions[i],
            "fit": "", "title": titles[i], "also_buy": also_buy[i], "tech2": "", "brand": brand[i],
            "feature": feats, "rank": ranks[i], "also_view": also_view[i], "details": details,
            "main_cat": "Video Games", "similar_item": "", "date": "", "price": prices[i], "asin": asins[i],
            "imageURL": [f"{IMG_HOST}{x}._SX38_SY50_CR,0,0,38,50_.jpg" for x in imgs],
            "imageURLHighRes": [f"{IMG_HOST}{x}.jpg" for x in imgs],
        }
        lines.append(json.dumps(rec) + "\n")
    return lines


def generate(params: SyntheticParams, out_dir: str | Path) -> dict:
    """Write REVIEWS_FILE and META_FILE into out_dir (exact Amazon 2018 formats); return counts.

    `out_dir` must exist; the caller renames it into place, so files are written directly.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(params.seed)
    w = simulate(params, rng)
    genre_names = _names(list(GENRE_VOCAB), params.genres)
    platform_names = _names(list(PLATFORMS), params.platforms)
    meta = _meta_records(rng, params, w, genre_names, platform_names)
    reviewed = np.unique(w.item)
    dropped = reviewed[_exact_mask(rng, reviewed.size, params.missing_meta)]
    kept = np.setdiff1d(np.arange(params.items), dropped)  # catalogue order, minus the lost ones
    twice = kept[_exact_mask(rng, kept.size, params.duplicate_meta)]
    with _gzip_lines(out_dir / META_FILE) as out:
        # A second crawl pass re-emits some items verbatim at the end, as in the real dumps.
        for block in (kept, twice):
            for lo in range(0, block.size, CHUNK):
                out.write("".join(meta[i] for i in block[lo:lo + CHUNK].tolist()).encode())
    _write_reviews(out_dir / REVIEWS_FILE, params, rng, w, genre_names, platform_names)
    links = w.also_view[1]
    return {
        "reviews": int(w.user.size),
        "users": int(np.unique(w.user).size),
        "items": int(params.items),
        "items_reviewed": int(reviewed.size),
        "meta_lines": int(kept.size + twice.size),
        "missing_meta": int(dropped.size),
        "duplicate_meta": int(twice.size),
        "also_view_links": int(links.size),
        "foreign_also_view": int((links < 0).sum()),
    }
