"""Mail settings of IamConfig: read from the environment, checked, errors naming the variable, and
the SMTP password kept out of every repr and message."""

from __future__ import annotations

import pytest

from aiki.iam.config import IamConfig, IamConfigError
from aiki.iam.context import _default_mailer
from aiki.iam.mail import NoMailer, SmtpMailer

ENV = {"AIKI_SECRET_KEY": "s3cret-0123456789-abcdefghijklmnopqrstuvwxyz", "AIKI_BASE_URL": "https://aiki.example.com"}
SMTP = "smtps://mailer:s3cret-pw@mail.example"


def test_mail_settings_come_from_the_environment() -> None:
    default = IamConfig.from_env(ENV)
    assert (default.email_verification, default.smtp_url, default.email_from) == (True, None, None)
    assert isinstance(_default_mailer(default), NoMailer)  # aiki dev swaps in a LogMailer
    config = IamConfig.from_env(
        {**ENV, "AIKI_SMTP_URL": SMTP, "AIKI_EMAIL_FROM": "aiki@example.com", "AIKI_EMAIL_VERIFICATION": "OFF"}
    )
    assert (config.email_verification, config.smtp_url, config.email_from) == (False, SMTP, "aiki@example.com")
    assert isinstance(_default_mailer(config), SmtpMailer)
    assert "s3cret-pw" not in repr(config)
    # A flag (override) wins over the environment.
    assert IamConfig.from_env({**ENV, "AIKI_EMAIL_VERIFICATION": "off"}, email_verification=True).email_verification


def test_require_mail_names_every_way_out() -> None:
    with pytest.raises(IamConfigError) as refused:
        IamConfig.from_env(ENV).require_mail()
    for name in ("AIKI_SMTP_URL", "AIKI_EMAIL_FROM", "AIKI_EMAIL_VERIFICATION=off"):
        assert name in str(refused.value)
    IamConfig.from_env({**ENV, "AIKI_EMAIL_VERIFICATION": "off"}).require_mail()
    IamConfig.from_env({**ENV, "AIKI_SMTP_URL": SMTP, "AIKI_EMAIL_FROM": "a@example.com"}).require_mail()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AIKI_EMAIL_VERIFICATION": "maybe"}, "AIKI_EMAIL_VERIFICATION"),
        ({"AIKI_SMTP_URL": SMTP}, "AIKI_EMAIL_FROM"),
        ({"AIKI_SMTP_URL": SMTP, "AIKI_EMAIL_FROM": "no-at-sign"}, "AIKI_EMAIL_FROM"),
        ({"AIKI_SMTP_URL": "smtp://mailer:s3cret-pw@mail.example?starttls=perhaps"}, "AIKI_SMTP_URL"),
    ],
)
def test_bad_mail_settings_name_the_variable_not_the_password(env: dict[str, str], named: str) -> None:
    with pytest.raises(IamConfigError, match=named) as refused:
        IamConfig.from_env({**ENV, **env})
    assert "s3cret-pw" not in str(refused.value)


def test_an_organization_name_cannot_break_the_subject_header() -> None:
    from aiki.iam.invitations import _invitation_email
    from aiki.iam.mail import _message

    mail = _invitation_email("bo@example.com", "al@example.com", "Evil\r\nBcc: all@example.com", "http://x/i", 86400)
    msg = _message("aiki@example.com", mail)  # raises on a header with a line break
    assert msg["Subject"] == "You are invited to Evil Bcc: all@example.com on Aiki"
    assert msg["Bcc"] is None


async def test_without_smtp_a_server_logs_no_link(caplog: pytest.LogCaptureFixture) -> None:
    from aiki.iam.mail import Email

    await NoMailer().send(Email(to="a@example.com", subject="Reset your Aiki password", text="token=SECRET"))
    assert "Reset your Aiki password" in caplog.text
    assert "SECRET" not in caplog.text
