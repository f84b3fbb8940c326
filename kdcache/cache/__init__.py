"""kdcache.cache"""
