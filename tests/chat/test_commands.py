"""``manage.py create_api_token``: thin call_command tests (the service is chat.auth)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from grace.auth import api_token_user
from grace.models import ApiToken


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_create_api_token_for_an_existing_user(user):
    out, err = run("ada", "--name", "ci")
    raw = out.strip()
    assert out == raw + "\n"  # stdout is the token alone: TOKEN=$(...) captures it
    token = ApiToken.objects.get()
    assert token.key_hash == ApiToken.hash_key(raw) and token.name == "ci"
    assert raw not in err and "not shown again" in err


@pytest.mark.django_db
def test_a_missing_user_is_an_error_that_names_create_user():
    with pytest.raises(CommandError, match="No user named 'nobody'.*--create-user"):
        run("nobody")
    assert not get_user_model().objects.exists() and not ApiToken.objects.exists()


@pytest.mark.django_db
def test_create_user_creates_the_user_once_with_no_password():
    out, err = run("alice", "--create-user")
    alice = get_user_model().objects.get(username="alice")
    assert not alice.has_usable_password() and alice.is_active and not alice.is_staff
    assert api_token_user(out.strip()) == alice
    assert "created" in err and out.strip() not in err
    out2, err2 = run("alice", "--create-user")  # exists now: just another token
    assert get_user_model().objects.count() == 1 and ApiToken.objects.count() == 2
    assert api_token_user(out2.strip()) == alice and "User 'alice' created" not in err2


@pytest.mark.django_db
def test_an_inactive_user_gets_no_token(django_user_model):
    django_user_model.objects.create_user("carl", is_active=False)
    with pytest.raises(CommandError, match="not active"):
        run("carl", "--create-user")
    assert not ApiToken.objects.exists()
