// Babel turns the ES modules of @jupyterlab packages into CommonJS for jest (tests only).
module.exports = require('@jupyterlab/testing/lib/babel-config');
