'use strict'
// bench_env - the benchmark's loopback world for Haraka (tests/bench/run-bench)
//
// Portcullis is measured with its resolver pointed at the loopback DNS
// server of the benchmark, with no reverse lookup of the client, and with
// SPF and DKIM applied to the loopback client (trusted_networks empty).
// This plugin puts Haraka in the same place, and changes nothing else:
//  * the node resolver (callback and promise APIs, used by the spf and
//    dkim plugins) asks the servers in BENCH_DNS (127.0.0.1:PORT) only;
//  * lookup_rdns answers "localhost" at once, instead of a PTR query per
//    connection (Portcullis does none);
//  * the loopback client is not private, so the spf plugin checks it, as
//    Portcullis does with an empty trusted_networks.

const dns = require('node:dns')

exports.register = function () {
    const servers = (process.env.BENCH_DNS || '').split(',').filter(Boolean)
    if (servers.length) {
        dns.setServers(servers)
        dns.promises.setServers(servers)
    }
    this.register_hook('connect_init', 'not_private')
    this.register_hook('lookup_rdns', 'rdns')
}

exports.not_private = function (next, connection) {
    connection.remote.is_private = false
    connection.remote.is_local = false
    next()
}

exports.rdns = function (next) {
    next(OK, 'localhost')
}
