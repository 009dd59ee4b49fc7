"""The prepared folder's file names: `data.prepare` writes them, `gamerec.prepared` reads them."""

INTERACTIONS = "interactions.parquet"  # user, item, timestamp, rating, split ("train" | "val" | "test")
USERS = "users.parquet"  # user, user_id (row 0: unknown)
ITEMS = "items.parquet"  # item, item_id, title, brand, brand_name, platform, price, price_missing
TEXT = "text.npz"  # indptr, indices: title + description token ids per item
ALSO_VIEW = "also_view.npz"  # indptr, indices: item -> also-viewed items in the catalogue
VOCAB = "vocab.json"  # {"brands": [...], "tokens": [...]}, index 0 = "<unk>"
STATS = "stats.json"  # encoder sizes and split counts
FILES = (INTERACTIONS, USERS, ITEMS, TEXT, ALSO_VIEW, VOCAB, STATS)
SPLITS = ("train", "val", "test")
