"""Helpers that write small real GeoTIFFs for tests and read results back."""

import numpy as np
from osgeo import gdal, osr

GEOTRANSFORM = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)


def utm_wkt(epsg=32632):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def write_cube(path, cube, nodata=None, geotransform=GEOTRANSFORM, epsg=32632, scale=None, offset=None):
    """Write a (bands, rows, cols) array as a GeoTIFF of the array's data type (int8: signed bytes, as GDAL 3.6
    writes them, Byte with PIXELTYPE=SIGNEDBYTE)."""
    cube = np.asarray(cube)
    if cube.ndim == 2:
        cube = cube[None]
    gdal_type = gdal.GetDataTypeByName({"float64": "Float64", "float32": "Float32", "int16": "Int16",
                                        "uint16": "UInt16", "uint8": "Byte", "int32": "Int32",
                                        "int8": "Byte"}[cube.dtype.name])
    options = ["PIXELTYPE=SIGNEDBYTE", "PHOTOMETRIC=MINISBLACK"] if cube.dtype == np.int8 else []
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cube.shape[2], cube.shape[1], cube.shape[0], gdal_type,
                                                   options=options)
    if geotransform is not None:  # None: a raster without a geotransform
        dataset.SetGeoTransform(geotransform)
    if epsg:
        dataset.SetProjection(utm_wkt(epsg))
    for index in range(cube.shape[0]):
        band = dataset.GetRasterBand(index + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if scale is not None:
            band.SetScale(scale)
        if offset is not None:
            band.SetOffset(offset)
        band.WriteArray(cube[index].view(np.uint8) if cube.dtype == np.int8 else cube[index])
    dataset = None
    return str(path)


def read(path):
    """(array, nodata, geotransform, projection WKT) of band 1 of a raster."""
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    return band.ReadAsArray(), band.GetNoDataValue(), dataset.GetGeoTransform(), dataset.GetProjection()


def rx_reference(pixels, background=None):
    """Float64 RX by the textbook formula with numpy's pseudo-inverse."""
    background = pixels if background is None else background
    mean = background.mean(axis=0)
    inverse = np.linalg.pinv(np.cov(background, rowvar=False))
    centred = pixels - mean
    return np.einsum("ij,jk,ik->i", centred, inverse, centred)


def leftovers(folder, keep):
    """Files in folder other than those named in keep (e.g. partial outputs)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def write_polygons(path, rings, epsg=32632):
    """A GeoPackage of polygons, one per ring of (x, y) map coordinates."""
    from osgeo import ogr

    source = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    layer = source.CreateLayer("targets", srs, ogr.wkbPolygon)
    for ring in rings:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in list(ring) + [ring[0]]) + "))"))
        layer.CreateFeature(feature)
    source = None
    return str(path)
