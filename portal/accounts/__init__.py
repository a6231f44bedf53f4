"""Accounts: users, passwords, tokens (JWT, refresh, API keys), OAuth sign-in, admin of users."""
