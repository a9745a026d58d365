"""Static files of the ward dashboard (HTML/CSS/JS, no build step); a package so that
setuptools ships them as package data."""
