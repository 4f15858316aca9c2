"""SQLite helpers shared by the collections, the search engine and the record service (PocketBase's
``tools/dbutils`` and ``tools/tokenizer``): identifier quoting (:mod:`.identifiers`), the tokenizer
(:mod:`.tokenizer`), the one CREATE INDEX parser (:mod:`.index`), JSON column SQL (:mod:`.json`),
transactions and SQLite error wording (:mod:`.transaction`)."""
