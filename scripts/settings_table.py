"""Print the README's table of the engine's stage settings, from the schema (ltbench.spec.schema).

    python scripts/settings_table.py    # paste between the README's settings-table markers

tests/test_schema.py checks that the README holds exactly these rows.
"""

from ltbench.spec.schema import all_engine_settings, settings_table


def markdown() -> str:
    head = "| key | default | allowed | group | what |\n| --- | --- | --- | --- | --- |"
    rows = ["| " + " | ".join(f"`{c}`" if i == 0 else c.replace("|", "/") for i, c in enumerate(row)) + " |"
            for row in settings_table(all_engine_settings())]
    return "\n".join([head, *rows])


if __name__ == "__main__":
    print(markdown())
