"""The SQLite model store: what is acknowledged survives reopening."""

from llmcell.admin.placement import ModelSpec
from llmcell.admin.store import ModelStore


def test_models_survive_reopen_and_updates_replace(tmp_path):
    path = tmp_path / "state" / "admin.sqlite3"
    store = ModelStore(path)
    store.put(ModelSpec("/sax/test/a", "smollm2-135m-instruct", "None", 2, 100))
    store.put(ModelSpec("/sax/test/b", "x.gguf", "None", 1, 50))
    store.put(ModelSpec("/sax/test/a", "smollm2-135m-instruct", "/c.gguf", 3, 100))
    assert store.delete("/sax/test/b") and not store.delete("/sax/test/b")
    store.db.close()  # no clean shutdown needed: every write committed
    again = ModelStore(path)
    assert again.all() == [ModelSpec("/sax/test/a", "smollm2-135m-instruct", "/c.gguf", 3, 100)]
