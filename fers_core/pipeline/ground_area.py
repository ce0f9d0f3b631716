"""Ground area of polygons in square metres, whatever the CRS they are in.

A polygon's area in map units is not a ground area in a geographic CRS (square degrees), nor in a projected
one that is not equal-area (Web Mercator inflates areas by 1/cos² of the latitude; UTM by up to 0.2 %). Each
polygon is moved to a Lambert azimuthal equal-area projection on the CRS's own ellipsoid, centred within half
a degree of it (far from the centre, the straight edges between the moved vertices no longer follow the
polygon), where planar area is ellipsoidal area, and measured there.
"""

from osgeo import ogr, osr

osr.UseExceptions()

GEOGRAPHIC_EDGE_DEGREES = 0.05  # longest edge moved as a straight line (coarse lon/lat grids cut chords otherwise)


def ground_areas(geometries, projection):
    """{id: area in m²} for `geometries` ({id: ogr.Geometry} in the CRS of the WKT `projection`), or None
    when there is no CRS or it has no ellipsoid (a local or engineering CRS), or a polygon cannot be measured."""
    measure = GroundAreas(projection)
    if not measure.usable or not geometries:
        return None
    areas = {ident: measure.area(geometry) for ident, geometry in geometries.items()}
    return None if any(area is None for area in areas.values()) else areas


class GroundAreas:
    """Measures polygons in the CRS of the WKT `projection` one at a time (`area`); `usable` is false when there is
    no CRS or it has no ellipsoid. One equal-area projection per half-degree cell, made when first needed."""

    def __init__(self, projection):
        self.usable = False
        self._transforms = {}
        if not projection:
            return
        source = osr.SpatialReference()
        source.ImportFromWkt(projection)
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if source.IsLocal() or not (source.IsGeographic() or source.IsProjected()):
            return
        try:
            geographic = source.CloneGeogCS()
            geographic.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            self._to_geographic = osr.CoordinateTransformation(source, geographic) if source.IsProjected() else None
        except (RuntimeError, TypeError):  # no usable ellipsoid or no transformation: no ground area
            return
        self._source, self._geographic, self.usable = source, geographic, True

    def area(self, geometry):
        """The ground area of `geometry` in m², None when it cannot be measured."""
        if not self.usable:
            return None
        try:
            west, east, south, north = geometry.GetEnvelope()
            longitude, latitude = (west + east) / 2, (south + north) / 2
            if self._to_geographic is not None:
                longitude, latitude, _ = self._to_geographic.TransformPoint(longitude, latitude)
            key = (round(longitude * 2) / 2, round(latitude * 2) / 2)  # one projection per half-degree cell
            if key not in self._transforms:
                self._transforms[key] = osr.CoordinateTransformation(
                    self._source, _equal_area_at(self._geographic, *key[::-1]))
            moved = geometry.Clone()
            if self._source.IsGeographic():  # a long edge along a parallel is a curve in the equal-area plane
                moved.Segmentize(GEOGRAPHIC_EDGE_DEGREES)
            if moved.Transform(self._transforms[key]) != ogr.OGRERR_NONE:
                return None
            return moved.GetArea()
        except (RuntimeError, TypeError):
            return None


def _equal_area_at(geographic, latitude, longitude):
    """A Lambert azimuthal equal-area CRS on `geographic`'s ellipsoid, centred at `latitude`, `longitude`."""
    equal_area = osr.SpatialReference()
    equal_area.SetProjCS("Equal area around the polygons")
    equal_area.CopyGeogCSFrom(geographic)
    equal_area.SetLAEA(latitude, longitude, 0.0, 0.0)
    equal_area.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return equal_area
