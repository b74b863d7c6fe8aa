"""Settings from the environment (12-factor), production-safe by default.

COLLAB_PRODUCTION=1 turns on every transport-security setting and refuses to start
with DEBUG on or without SECRET_KEY. COLLAB_DEMO=1 allows the demo helpers.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured


def _flag(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("COLLAB_DATA_DIR", BASE_DIR / "data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = _flag("COLLAB_PRODUCTION")
DEBUG = _flag("DEBUG")
DEMO_MODE = _flag("COLLAB_DEMO") and not PRODUCTION

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off in production (COLLAB_PRODUCTION=1).")
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("SECRET_KEY must be set (50+ characters) in production.")
elif not SECRET_KEY:
    # Development and tests only: a fixed key is harmless where nothing is deployed.
    SECRET_KEY = "collab-insecure-development-key-do-not-use-in-production-0123456789"  # noqa: S105

ALLOWED_HOSTS = _list("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = _list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "collab.accounts",
    "collab.cases",
    "collab.audit",
    "collab.oncall",
    "collab.escalation",
    "collab.retention",
    "collab.demo",
]

MIDDLEWARE = [
    # First: an oversized body is refused before anything reads it (collab/api.py).
    "collab.api.body_limit_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "collab.accounts.middleware.InactivityLogoutMiddleware",
    "collab.accounts.middleware.RequireSecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "collab.urls"
ASGI_APPLICATION = "collab.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "collab" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'collab.sqlite3'}"),
        conn_max_age=int(os.environ.get("COLLAB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
# One test database per test process, so concurrent test runs never share one.
DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file test database lets live server processes share it with the test run.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock up front
    # so concurrent writers queue instead of failing on a lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        # secure_delete: deleted content (a recalled or purged message) is overwritten
        # with zeros in the file, not left in free pages (services/tombstones.py).
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA secure_delete=ON;",
    }

# SQLite has one writer: its writes stay on one thread. Elsewhere sends run in a thread
# pool so their commits (and fsyncs) overlap.
DB_SINGLE_WRITER = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "collab.realtime.InMemoryLayer"}}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"

# Sign-in throttling (django-axes): per account and, separately, per address.
AXES_FAILURE_LIMIT = int(os.environ.get("COLLAB_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("COLLAB_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_LOCKOUT_CALLABLE = "collab.api.lockout_response"  # JSON under /api/, else the page
AXES_VERBOSE = False
# The client address behind COLLAB_PROXY_COUNT reverse proxies, each appending the
# address it received from to X-Forwarded-For: django-ipware (which axes uses, and so
# does the audit's RequestMeta) takes the entry that many hops from the right, so a
# forged entry a client puts further left is never believed. 0: no proxy, the socket
# peer address only (X-Forwarded-For ignored). README "Production" tells what to set.
PROXY_COUNT = int(os.environ.get("COLLAB_PROXY_COUNT", "0"))
AXES_IPWARE_META_PRECEDENCE_ORDER: tuple[str, ...] = ("REMOTE_ADDR",)
AXES_IPWARE_PROXY_COUNT: int | None = None
if PROXY_COUNT > 0:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
    # ipware counts the proxies listed in the header; the nearest one is the peer.
    AXES_IPWARE_PROXY_COUNT = PROXY_COUNT - 1
IPWARE_STRICT = False  # a chain longer than expected: still count from the right

# django-otp: exponential throttling per device after failures; TOTP codes never reused.
OTP_TOTP_ISSUER = os.environ.get("COLLAB_OTP_ISSUER", "collab")
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1

# Automatic logoff after inactivity, for pages and open sockets.
IDLE_TIMEOUT_SECONDS = int(os.environ.get("COLLAB_IDLE_TIMEOUT_SECONDS", str(15 * 60)))
SESSION_CHECK_SECONDS = float(os.environ.get("COLLAB_SESSION_CHECK_SECONDS", "30"))
# Absolute session lifetime from sign-in, whatever the activity (pages and sockets).
SESSION_ABSOLUTE_SECONDS = int(
    os.environ.get("COLLAB_SESSION_ABSOLUTE_SECONDS", str(12 * 3600))
)
SESSION_COOKIE_AGE = int(os.environ.get("COLLAB_SESSION_MAX_AGE_SECONDS", str(12 * 3600)))
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "collab.views.csrf_failure"

# WebSocket limits (OWASP): control and message frames up to 64 KiB.
WS_MAX_FRAME_BYTES = int(os.environ.get("COLLAB_WS_MAX_FRAME_BYTES", str(64 * 1024)))
WS_RATE_PER_SECOND = float(os.environ.get("COLLAB_WS_RATE_PER_SECOND", "50"))
WS_RATE_BURST = int(os.environ.get("COLLAB_WS_RATE_BURST", "100"))
# Bytes a socket may have queued for a client that does not read (close 4507 beyond).
WS_MAX_OUTBOUND_BYTES = int(
    os.environ.get("COLLAB_WS_MAX_OUTBOUND_BYTES", str(4 * 1024 * 1024))
)

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(Path(os.environ.get("COLLAB_MEDIA_DIR", DATA_DIR / "media")))},
    },
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# Strict Content-Security-Policy: no inline script, no third-party origins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

if PRODUCTION:
    SECURE_SSL_REDIRECT = _flag("COLLAB_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("COLLAB_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "collab.security": {"handlers": ["console"], "level": "INFO"},
        "django.security": {"handlers": ["console"], "level": "WARNING"},
    },
}

# Case rooms.
MAX_MESSAGE_CT_BYTES = int(os.environ.get("COLLAB_MAX_MESSAGE_BYTES", str(40 * 1024)))
MAX_ATTACHMENT_BYTES = int(os.environ.get("COLLAB_MAX_ATTACHMENT_BYTES", str(25 * 1024 * 1024)))
EPOCH_GRACE_SECONDS = int(os.environ.get("COLLAB_EPOCH_GRACE_SECONDS", "30"))
# A sender may recall their message for this long after it was stored (services/recall.py).
RECALL_WINDOW_MINUTES = int(os.environ.get("COLLAB_RECALL_WINDOW_MINUTES", "15"))
# A catch-up of 10,000 messages takes about 20 pages (the byte cap below binds first).
HISTORY_PAGE_MAX = 1000
# Request bodies (JSON) at most 2 MiB, refused 413 body_too_large before any view reads
# them; blob parts have their own bound (16 chunks). Set the proxy's limit just above.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Uploads still unfinished this long after they started are expired by
# `manage.py expire_uploads` (run it from a timer; README "Production").
UPLOAD_EXPIRY_HOURS = int(os.environ.get("COLLAB_UPLOAD_EXPIRY_HOURS", "24"))
# History pages are capped by bytes of serialized items too (at least one message a page).
HISTORY_PAGE_MAX_BYTES = int(
    os.environ.get("COLLAB_HISTORY_PAGE_MAX_BYTES", str(512 * 1024))
)

# Device proofs (protocol.md §2): every device-acting request and case socket proves
# possession of the device's signing key. On by default; COLLAB_DEVICE_PROOF_REQUIRED=0
# only lets clients that predate proofs in (a proof that is sent is still verified in
# full; only a missing one is tolerated) and is refused in production.
DEVICE_PROOF_REQUIRED = _flag("COLLAB_DEVICE_PROOF_REQUIRED", True)
if PRODUCTION and not DEVICE_PROOF_REQUIRED:
    raise ImproperlyConfigured("Device proofs cannot be turned off in production.")
DEVICE_PROOF_WINDOW_SECONDS = 120
DEVICE_NONCE_SECONDS = 300
WS_PROVE_TIMEOUT_SECONDS = float(os.environ.get("COLLAB_WS_PROVE_TIMEOUT_SECONDS", "10"))

# Roster bounds: one member cannot make a case unusable by growing its roster
# (protocol.md, "Roster limits"). Active (unrevoked) devices per user; devices in one
# case roster; bytes of serialized entries in one page of GET /api/cases/<id>/log.
MAX_DEVICES_PER_USER = int(os.environ.get("COLLAB_MAX_DEVICES_PER_USER", "10"))
MAX_ROSTER_DEVICES = int(os.environ.get("COLLAB_MAX_ROSTER_DEVICES", "200"))
LOG_PAGE_MAX_BYTES = int(os.environ.get("COLLAB_LOG_PAGE_MAX_BYTES", str(1024 * 1024)))
# A consult requested from a specialty is offered to its on-call provider alone for this
# long before the rest of the specialty sees it in the queue (collab/oncall/routing.py).
ONCALL_FIRST_MINUTES = int(os.environ.get("COLLAB_ONCALL_FIRST_MINUTES", "10"))
