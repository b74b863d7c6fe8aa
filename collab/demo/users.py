"""The demo accounts: known passwords, for a first run on a developer's machine only."""

from __future__ import annotations

from typing import TypedDict


class DemoUser(TypedDict):
    username: str
    password: str
    display_name: str
    role: str
    specialty: str
    organisation: str


DEMO_USERS: list[DemoUser] = [
    {
        "username": "pcp",
        "password": "demo-pcp-2026!",
        "display_name": "Dr Alex Morgan",
        "role": "provider",
        "specialty": "Family medicine",
        "organisation": "Riverside Practice",
    },
    {
        "username": "derm",
        "password": "demo-derm-2026!",
        "display_name": "Dr Priya Shah",
        "role": "provider",
        "specialty": "Dermatology",
        "organisation": "City Hospital",
    },
    {
        "username": "patient",
        "password": "demo-patient-2026!",
        "display_name": "Sam Taylor",
        "role": "patient",
        "specialty": "",
        "organisation": "",
    },
    {
        "username": "admin",
        "password": "demo-admin-2026!",
        "display_name": "Jo Admin",
        "role": "admin",
        "specialty": "",
        "organisation": "Riverside Practice",
    },
]
