"""A plain SQLite writer for alone.py: single-row inserts into a table with a TEXT primary key (random
15-character ids, as PocketBase's), as fast as it goes or at ``rate`` per second, until killed.

Usage: writer.py DB PRAGMAS(plain|pbfast) RATE(0 = as fast as it goes) AUTOCHECKPOINT(-1 = SQLite's default)"""

import random
import string
import sys
import time

import apsw

db, pragmas, rate, autocheckpoint = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
connection = apsw.Connection(db)
connection.setbusytimeout(5000)
connection.execute("PRAGMA journal_mode=WAL").fetchall()
if pragmas == "pbfast":  # pbfast/pocketbase/tenant.py
    for pragma in ("synchronous = NORMAL", "foreign_keys = OFF", "temp_store = MEMORY", "cache_size = -16000"):
        connection.execute(f"PRAGMA {pragma}")
if autocheckpoint >= 0:
    connection.execute(f"PRAGMA wal_autocheckpoint = {autocheckpoint}")
connection.execute("CREATE TABLE IF NOT EXISTS log (id TEXT PRIMARY KEY NOT NULL, n INTEGER, msg TEXT)")
alphabet = string.ascii_lowercase + string.digits
n = 0
while True:
    connection.execute("INSERT INTO log (id, n, msg) VALUES (?, ?, ?)",
                       ("".join(random.choices(alphabet, k=15)), n, "x" * 100))
    n += 1
    if rate:
        time.sleep(1 / rate)
