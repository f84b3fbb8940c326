"""kdcache.evaluate"""
