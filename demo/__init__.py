"""``diccae demo``: generated clips with designed look-alike and sound-alike classes,
and the end-to-end pipeline (extract -> cluster -> confusion -> train -> eval -> audit)
with its report.  Uses featstore and trainer; nothing imports it but the CLI.
"""
