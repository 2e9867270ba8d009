"""Function blueprints: bind, call the domain, answer. No decisions here."""
