"""Print a pip constraints file that pins every runtime dependency to the lowest version
pyproject.toml allows (its `>=` bound), so CI proves the bottom of each declared range."""

import re
import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
for requirement in project["dependencies"]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+).*", requirement)
    if match is None:
        sys.exit(f"lowest.py: cannot read a lower bound from {requirement!r}: write it as NAME>=VERSION")
    print(f"{match.group(1)}=={match.group(3)}")
