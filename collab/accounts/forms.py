from __future__ import annotations

from django import forms


class PasswordForm(forms.Form):
    username = forms.CharField(
        max_length=150,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    password = forms.CharField(
        max_length=256, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class CodeForm(forms.Form):
    code = forms.RegexField(
        regex=r"^\s*[0-9a-fA-F ]{6,12}\s*$",
        max_length=16,
        label="Code",
        error_messages={"invalid": "Enter the 6-digit code from your app or a backup code."},
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )
