"""Ground area of polygons in square metres, whatever the CRS they are in.

A polygon's area in map units is not a ground area in a geographic CRS (square degrees), nor in a projected
one that is not equal-area (Web Mercator inflates areas by 1/cos² of the latitude; UTM by up to 0.2 %). The
polygons are moved to a Lambert azimuthal equal-area projection on the CRS's own ellipsoid, centred on them,
where planar area is ellipsoidal area, and measured there.
"""

from osgeo import ogr, osr

osr.UseExceptions()


def ground_areas(geometries, projection):
    """{id: area in m²} for `geometries` ({id: ogr.Geometry} in the CRS of the WKT `projection`), or None
    when there is no CRS or it has no ellipsoid (a local or engineering CRS)."""
    if not projection or not geometries:
        return None
    source = osr.SpatialReference()
    source.ImportFromWkt(projection)
    source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if source.IsLocal() or not (source.IsGeographic() or source.IsProjected()):
        return None
    try:
        to_equal_area = osr.CoordinateTransformation(source, _equal_area_around(geometries, source))
    except (RuntimeError, TypeError):  # no usable ellipsoid or no transformation: no ground area
        return None
    areas = {}
    for ident, geometry in geometries.items():
        moved = geometry.Clone()
        if moved.Transform(to_equal_area) != ogr.OGRERR_NONE:
            return None
        areas[ident] = moved.GetArea()
    return areas


def _equal_area_around(geometries, source):
    """A Lambert azimuthal equal-area CRS on `source`'s ellipsoid, centred on the geometries' bounding box."""
    west, east, south, north = _bounds(geometries.values())
    geographic = source.CloneGeogCS()
    geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    longitude, latitude = (west + east) / 2, (south + north) / 2
    if source.IsProjected():
        longitude, latitude, _ = osr.CoordinateTransformation(source, geographic).TransformPoint(longitude, latitude)
    equal_area = osr.SpatialReference()
    equal_area.SetProjCS("Equal area around the polygons")
    equal_area.CopyGeogCSFrom(geographic)
    equal_area.SetLAEA(latitude, longitude, 0.0, 0.0)
    equal_area.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return equal_area


def _bounds(geometries):
    envelopes = [geometry.GetEnvelope() for geometry in geometries]
    return (min(e[0] for e in envelopes), max(e[1] for e in envelopes),
            min(e[2] for e in envelopes), max(e[3] for e in envelopes))
