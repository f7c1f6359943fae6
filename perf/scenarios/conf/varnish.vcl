# Varnish as a reverse proxy beside reflexd (make bench, docs/bench.md).
# Template: bench.sh replaces @ORIGIN_PORT@ and runs
#   varnishd -F -a 127.0.0.1:PORT -f varnish.vcl -s malloc,256m -n <rundir> -T none
#            -p thread_pools=1
# The builtin VCL does the rest: it follows Cache-Control (objects marked no-store or
# private become hit-for-miss) and keeps idle backend connections open for reuse.
# Varnish cannot run with one thread (a worker thread per active request); all its
# threads are pinned to the proxy's CPU instead.
#   /hit/   looked up in the cache
#   else    passed to the origin without a cache lookup (like the other proxies'
#           pass-through locations)
vcl 4.1;
backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
}
sub vcl_recv {
    if (req.url !~ "^/hit/") {
        return (pass);
    }
}
