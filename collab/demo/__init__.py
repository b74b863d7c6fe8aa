"""Demo accounts and a demo case for a first run (COLLAB_DEMO=1 only).

An app of its own at the top: it may use everything (accounts, cases, the client SDK),
so that nothing else has to import upwards for it.
"""
